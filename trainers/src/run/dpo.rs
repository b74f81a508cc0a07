//! The DPO trainer: optional supervised warm-up on the chosen responses (which becomes the
//! frozen reference), then token-weighted DPO with any otpref method; held-out preference
//! metrics (ties counted as ties) and, on the built-in task, the success rate of greedy
//! generations for the policy beside its reference.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::AdamWConfig;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use clap::Args;
use otpref::{
    token_weights, weighted_dpo_loss, DpoInputs, DpoLossConfig, OtBackend, ResponseTokens,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};

use super::config::{prepare_output, CommonConfig};
use super::datasets::{datasets, tokenize};
use super::model_source::{model_and_tokenizer, ModelSource};
use crate::data::{collate_pairs, PairBatch, Text, TokenizedPair};
use crate::error::Result;
use crate::methods::{DpoLoss, DpoMethod, MethodSettings};
use crate::model::{generate_greedy, next_token_logps, CausalLm};
use crate::task::Problem;
use crate::tokenizer::Tokenizer;
use crate::training::{
    load_module, save_module, scalar, Checkpoints, Method, MetricsLog, MicroStep, ParameterCounts,
    Trainer,
};

/// Every setting of the DPO trainer.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct DpoConfig {
    /// Settings shared with the reward trainer.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Peak learning rate (AdamW) of the DPO phase.
    #[arg(long, default_value_t = 2e-6)]
    pub lr: f64,
    /// Token-weighting method.
    #[arg(long, value_enum, default_value_t = DpoMethod::Otpo)]
    pub method: DpoMethod,
    /// Loss shape (SimPO has its own).
    #[arg(long, value_enum, default_value_t = DpoLoss::Sigmoid)]
    pub loss: DpoLoss,
    /// β: the strength of the KL regularisation (SimPO: its reward scale).
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Label smoothing for the sigmoid (conservative DPO) and robust losses, in [0, 0.5).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// SimPO's target reward margin γ.
    #[arg(long, default_value_t = 0.5)]
    pub simpo_gamma: f64,
    /// LD-DPO's α: weight of the tokens past the shorter response's length.
    #[arg(long, default_value_t = 0.5)]
    pub ld_alpha: f64,
    /// OTPO's entropic regularisation ε1.
    #[arg(long, default_value_t = 1.0)]
    pub otpo_epsilon: f64,
    /// OTPO's marginal relaxation ε2.
    #[arg(long, default_value_t = 0.2)]
    pub otpo_marginal_penalty: f64,
    /// Weight α of a negative log-likelihood term on the chosen responses added to the DPO
    /// loss (TRL's `rpo_alpha`; RPO, Pang et al. 2024): keeps the chosen responses likely while
    /// the margin grows. 0 turns it off (TRL's default); the built-in task's recipe uses 1
    /// (`docs/results.md`).
    #[arg(long, default_value_t = 1.0)]
    #[serde(default)]
    pub rpo_alpha: f64,
    /// Supervised steps on the chosen responses before DPO (the result is the reference).
    #[arg(long, default_value_t = 800)]
    pub sft_steps: usize,
    /// Peak learning rate of the supervised warm-up.
    #[arg(long, default_value_t = 3e-3)]
    pub sft_lr: f64,
    /// Compute the reference's log-probabilities once over the training data (TRL's
    /// `precompute_ref_log_probs`) instead of a reference forward pass per step.
    #[arg(long)]
    pub precompute_ref: bool,
    /// Held-out prompts decoded greedily at the end (policy and reference).
    #[arg(long, default_value_t = 128)]
    pub eval_prompts: usize,
    /// Longest greedy generation, in tokens.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
}

impl DpoConfig {
    /// Checks every setting.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.common.validate()?;
        for (flag, value) in [
            ("--lr", self.lr),
            ("--beta", self.beta),
            ("--otpo-epsilon", self.otpo_epsilon),
            ("--otpo-marginal-penalty", self.otpo_marginal_penalty),
            ("--sft-lr", self.sft_lr),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{flag} must be a positive number, got {value}"));
            }
        }
        if !(self.rpo_alpha.is_finite() && self.rpo_alpha >= 0.0) {
            return Err(format!(
                "--rpo-alpha must be a number >= 0 (0 turns the NLL term off), got {}",
                self.rpo_alpha
            ));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return Err(format!(
                "--label-smoothing must be in [0, 0.5), got {}",
                self.label_smoothing
            ));
        }
        if !(self.ld_alpha.is_finite() && (0.0..=1.0).contains(&self.ld_alpha)) {
            return Err(format!(
                "--ld-alpha must be in [0, 1], got {}",
                self.ld_alpha
            ));
        }
        if !self.simpo_gamma.is_finite() {
            return Err(format!(
                "--simpo-gamma must be a number, got {}",
                self.simpo_gamma
            ));
        }
        if self.common.steps == 0 {
            return Err("--steps must be at least 1".into());
        }
        Ok(())
    }

    pub(crate) fn settings(&self) -> MethodSettings {
        MethodSettings {
            simpo_gamma: self.simpo_gamma,
            ld_alpha: self.ld_alpha,
            otpo_epsilon: self.otpo_epsilon,
            otpo_marginal_penalty: self.otpo_marginal_penalty,
        }
    }
}

impl super::cli::TrainerSettings for DpoConfig {
    fn common(&self) -> &CommonConfig {
        &self.common
    }

    fn validate(&self) -> std::result::Result<(), String> {
        DpoConfig::validate(self)
    }

    fn train<B>(&self, resume: bool, device: &B::Device) -> Result<()>
    where
        B: AutodiffBackend + OtBackend,
        B::InnerBackend: OtBackend,
    {
        run::<B>(self, resume, device).map(|_| ())
    }
}

/// How the policy and the reference compare on held-out data.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HeldOut {
    /// Pairs whose chosen implicit reward is higher.
    pub wins: usize,
    /// Pairs whose implicit rewards are equal (policy = reference gives only ties).
    pub ties: usize,
    /// Pairs whose rejected implicit reward is higher.
    pub losses: usize,
    /// Mean DPO loss.
    pub loss: f64,
    /// Mean reward margin.
    pub margin: f64,
}

/// Greedy generations on held-out prompts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Generations {
    /// Share of prompts answered correctly (built-in task only).
    pub success_rate: Option<f64>,
    /// Mean generated length in tokens.
    pub mean_length: f64,
    /// A few (prompt, generation) examples.
    pub examples: Vec<(String, String)>,
}

/// The end-of-run summary (also written to `OUTPUT/summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DpoSummary {
    /// The method trained.
    pub method: DpoMethod,
    /// Held-out preference counts of the trained policy against the reference.
    pub held_out: HeldOut,
    /// The reference's generations.
    pub reference: Generations,
    /// The policy's generations.
    pub policy: Generations,
    /// Share of DPO step time spent computing token weights (OT for OTPO).
    pub weight_time_share: f64,
    /// Where the trained model was saved (a Hugging Face folder).
    pub model_dir: PathBuf,
    /// Whether the run was interrupted (Ctrl-C) before its last step.
    pub interrupted: bool,
}

/// Runs the DPO trainer on backend `B` (resuming from `OUTPUT/checkpoints` when `resume`):
/// SFT then DPO, two fits of the same loop.
pub fn run<B>(config: &DpoConfig, resume: bool, device: &B::Device) -> Result<DpoSummary>
where
    B: AutodiffBackend + OtBackend,
    B::InnerBackend: OtBackend,
{
    let common = &config.common;
    let (source, tokenizer) = model_and_tokenizer(common)?;
    let (train, eval) = datasets(common)?;
    let train_pairs = tokenize(&train, &tokenizer, common)?;
    let eval_pairs = tokenize(&eval, &tokenizer, common)?;
    prepare_output(&common.output, config)?;
    B::seed(device, common.seed);

    let loaded = source.load_policy::<B>(common.lora.config().as_ref(), device)?;
    let lora = loaded.lora;
    println!("{}", ParameterCounts::of(&loaded.model));
    let new_optimizer = || {
        AdamWConfig::new()
            .with_weight_decay(common.weight_decay as f32)
            .init::<B, CausalLm<B>>()
    };
    let checkpoints = Checkpoints::new(&common.output, common.keep_checkpoints);
    let (policy, optimizer, state) =
        checkpoints.resume(resume, loaded.model, new_optimizer(), device)?;
    let metrics = MetricsLog::open(&common.output, resume.then_some(state.step))?;
    let total = config.sft_steps + common.steps;
    let mut trainer = Trainer::new(
        common.loop_config(lora.as_ref()),
        train_pairs.len(),
        checkpoints,
        metrics,
        state,
        total,
    );
    let pad = tokenizer.pad_id();

    let sft = common.phase(0, config.sft_steps, config.sft_lr);
    let mut warm_up = SftStep {
        pairs: &train_pairs,
        pad,
        device,
    };
    let fitted = trainer.fit(&mut warm_up, policy, optimizer, &sft, device)?;
    if fitted.interrupted {
        trainer.finish();
        return Ok(DpoSummary::stopped(config.method));
    }
    let (mut policy, mut optimizer) = (fitted.model, fitted.optimizer);
    let starts_dpo = trainer.next_step() == config.sft_steps;
    if starts_dpo {
        if let (Some(lora), true) = (&lora, config.sft_steps > 0) {
            // The warm-up's adapters become part of the frozen base, and DPO trains fresh ones
            // on top (as one merges an SFT adapter before DPO with PEFT). Seeded by the step,
            // so that a resumed run draws the same adapters.
            B::seed(device, common.seed.wrapping_add(config.sft_steps as u64));
            policy = policy.merge_lora().with_lora(lora, device);
        }
        optimizer = new_optimizer();
    }
    let reference = reference_model(config, &source, &policy, lora.is_some(), starts_dpo, device)?;
    let precomputed = config.precompute_ref.then(|| {
        trainer.println(&format!(
            "precomputing the reference's log-probabilities over {} pairs",
            train_pairs.len()
        ));
        reference_logps(&reference, &train_pairs, common.batch_size, pad, device)
    });

    let dpo = common.phase(config.sft_steps, common.steps, config.lr);
    let mut method = DpoStep {
        config,
        settings: config.settings(),
        reference: &reference,
        precomputed,
        pairs: &train_pairs,
        eval_pairs: &eval_pairs,
        pad,
        device,
        weight_time: Duration::ZERO,
    };
    let fitted = trainer.fit(&mut method, policy, optimizer, &dpo, device)?;
    trainer.finish();
    if fitted.interrupted {
        return Ok(DpoSummary::stopped(config.method));
    }
    let weight_time_share =
        method.weight_time.as_secs_f64() / fitted.step_time.as_secs_f64().max(1e-9);

    let trained = fitted.model.valid();
    let held_out = held_out(
        config,
        &method.settings,
        &trained,
        &reference,
        &eval_pairs,
        pad,
        device,
    )?;
    println!("{}", log_held_out(trainer.metrics(), total, &held_out));
    let prompts = eval_prompts(&eval, config.eval_prompts, &tokenizer)?;
    let reference_generations = generations(
        &reference,
        &prompts,
        &tokenizer,
        config.max_new_tokens,
        device,
    )?;
    let policy_generations = generations(
        &trained,
        &prompts,
        &tokenizer,
        config.max_new_tokens,
        device,
    )?;

    let examples = weighted_examples(
        config,
        &method.settings,
        &trained,
        &eval_pairs,
        &tokenizer,
        device,
    )?;
    let title = format!("{:?} token weights on held-out pairs", config.method);
    super::report::write_weights_page(&common.output.join("weights.html"), &title, &examples)?;
    let model_dir = common.output.join("model");
    source.save_policy(
        &trained,
        lora.as_ref(),
        common.lora.merge_adapters,
        &model_dir,
    )?;
    let summary = DpoSummary {
        method: config.method,
        held_out,
        reference: reference_generations,
        policy: policy_generations,
        weight_time_share,
        model_dir,
        interrupted: false,
    };
    crate::training::write_json(&common.output.join("summary.json"), &summary)?;
    // A plot that cannot be drawn must not cost the run its results.
    if let Err(e) = super::curves::write_curves(&common.output) {
        eprintln!("warning: {e}");
    }
    print_summary(&summary);
    Ok(summary)
}

impl DpoSummary {
    /// The summary of a run stopped (Ctrl-C) before its last step.
    fn stopped(method: DpoMethod) -> Self {
        println!("stopped before the last step: no final evaluation, no model saved");
        Self {
            method,
            held_out: HeldOut::default(),
            reference: Generations::default(),
            policy: Generations::default(),
            weight_time_share: 0.0,
            model_dir: PathBuf::new(),
            interrupted: true,
        }
    }
}

/// The frozen reference as DPO starts (`starts_dpo`) or resumes. With LoRA: the base with the
/// adapters off, sharing the policy's frozen weights. Without: the policy as DPO starts (after
/// the warm-up, or as loaded), saved to `OUTPUT/reference` for a resumed run to read back.
fn reference_model<B: AutodiffBackend>(
    config: &DpoConfig,
    source: &ModelSource,
    policy: &CausalLm<B>,
    lora: bool,
    starts_dpo: bool,
    device: &B::Device,
) -> Result<CausalLm<B::InnerBackend>> {
    let path = config.common.output.join("reference");
    if lora {
        return Ok(policy.valid().without_lora());
    }
    if starts_dpo {
        let frozen = policy.valid();
        save_module(&frozen, &path)?;
        return Ok(frozen);
    }
    load_module(CausalLm::new(source.config(), device), &path, device)
}

/// The supervised warm-up as a [`Method`]: the chosen responses' NLL.
struct SftStep<'a, B: Backend> {
    pairs: &'a [TokenizedPair],
    pad: u32,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> Method<B> for SftStep<'_, B> {
    type Model = CausalLm<B>;

    fn phase(&self) -> &'static str {
        "sft"
    }

    fn loss(&mut self, model: &CausalLm<B>, indices: &[usize], _: usize) -> Result<MicroStep<B>> {
        let batch = collate_indices::<B>(self.pairs, indices, self.pad, self.device);
        let tokens = batch.num_tokens;
        let loss = sft_loss(model, batch);
        Ok(MicroStep {
            metrics: vec![("loss", scalar(loss.clone()))],
            loss,
            tokens,
        })
    }
}

/// The DPO phase as a [`Method`]: token weights, the weighted DPO loss, held-out pairs.
struct DpoStep<'a, B: AutodiffBackend> {
    config: &'a DpoConfig,
    settings: MethodSettings,
    reference: &'a CausalLm<B::InnerBackend>,
    precomputed: Option<Vec<ReferenceLogps>>,
    pairs: &'a [TokenizedPair],
    eval_pairs: &'a [TokenizedPair],
    pad: u32,
    device: &'a B::Device,
    weight_time: Duration,
}

impl<B> Method<B> for DpoStep<'_, B>
where
    B: AutodiffBackend + OtBackend,
    B::InnerBackend: OtBackend,
{
    type Model = CausalLm<B>;

    fn phase(&self) -> &'static str {
        "dpo"
    }

    fn shown(&self) -> &'static [&'static str] {
        &["loss", "rewards/accuracies", "rewards/margins"]
    }

    fn loss(
        &mut self,
        model: &CausalLm<B>,
        indices: &[usize],
        step: usize,
    ) -> Result<MicroStep<B>> {
        let batch = collate_indices::<B>(self.pairs, indices, self.pad, self.device);
        let tokens = batch.num_tokens;
        let precomputed = self
            .precomputed
            .as_ref()
            .map(|all| indices.iter().map(|&i| all[i].clone()).collect::<Vec<_>>());
        let outcome = dpo_loss(
            self.config,
            &self.settings,
            step,
            model,
            self.reference,
            precomputed.as_deref(),
            batch,
            self.device,
        )?;
        self.weight_time += outcome.weight_time;
        Ok(MicroStep {
            loss: outcome.loss,
            metrics: outcome.metrics,
            tokens,
        })
    }

    fn timing_metrics(&self, step_time: Duration) -> Vec<(&'static str, f64)> {
        let share = self.weight_time.as_secs_f64() / step_time.as_secs_f64().max(1e-9);
        vec![("otpref/weight_time_share", share)]
    }

    fn evaluate(
        &mut self,
        model: &CausalLm<B>,
        step: usize,
        metrics: &mut MetricsLog,
    ) -> Result<Option<String>> {
        let held_out = held_out(
            self.config,
            &self.settings,
            &model.valid(),
            self.reference,
            self.eval_pairs,
            self.pad,
            self.device,
        )?;
        Ok(Some(log_held_out(metrics, step, &held_out)))
    }
}

/// The pairs `indices` of `pairs` collated into one batch.
fn collate_indices<B: Backend>(
    pairs: &[TokenizedPair],
    indices: &[usize],
    pad: u32,
    device: &B::Device,
) -> PairBatch<B> {
    let chosen: Vec<TokenizedPair> = indices.iter().map(|&i| pairs[i].clone()).collect();
    collate_pairs::<B>(&chosen, pad, device)
}

/// Reference log-probabilities of one pair, `[len - 1]` per response row, computed once.
#[derive(Debug, Clone)]
struct ReferenceLogps {
    chosen: Vec<f32>,
    rejected: Vec<f32>,
}

/// Reference log-probabilities of every pair (in its own collation), for `--precompute-ref`.
fn reference_logps<B: burn::tensor::backend::Backend>(
    reference: &CausalLm<B>,
    pairs: &[TokenizedPair],
    batch_size: usize,
    pad: u32,
    device: &B::Device,
) -> Vec<ReferenceLogps> {
    let mut all = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size) {
        let batch = collate_pairs::<B>(chunk, pad, device);
        let out = reference.forward(batch.input_ids.clone(), batch.attention_mask);
        let logps = next_token_logps(out.logits, batch.input_ids);
        let [rows, width] = logps.dims();
        let values = logps
            .into_data()
            .to_vec::<f32>()
            .expect("f32 log-probabilities");
        let row = |r: usize| values[r * width..(r + 1) * width].to_vec();
        let half = rows / 2;
        for i in 0..half {
            all.push(ReferenceLogps {
                chosen: row(i),
                rejected: row(half + i),
            });
        }
    }
    all
}

/// Precomputed rows laid out as the batch's `[2·pairs, len - 1]` (each row's own positions are
/// the same in any collation: prompt then response, right padding).
fn precomputed_tensor<B: burn::tensor::backend::Backend>(
    rows: &[ReferenceLogps],
    width: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let fit = |row: &Vec<f32>| {
        let mut row = row.clone();
        row.resize(width, 0.0);
        row.truncate(width);
        row
    };
    let flat: Vec<f32> = rows
        .iter()
        .map(|r| fit(&r.chosen))
        .chain(rows.iter().map(|r| fit(&r.rejected)))
        .flatten()
        .collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(flat, [2 * rows.len(), width]),
        device,
    )
}

/// Supervised loss: mean negative log-likelihood of the chosen responses' tokens.
fn sft_loss<B: AutodiffBackend>(policy: &CausalLm<B>, batch: PairBatch<B>) -> Tensor<B, 1> {
    let pairs = batch.pairs;
    let [_, len] = batch.input_ids.dims();
    let ids = batch.input_ids.slice([0..pairs, 0..len]);
    let mask = batch.attention_mask.slice([0..pairs, 0..len]);
    let response = batch.response_mask.slice([0..pairs, 0..len - 1]);
    let out = policy.forward(ids.clone(), mask);
    response_nll(next_token_logps(out.logits, ids), response)
}

struct StepOutcome<B: AutodiffBackend> {
    loss: Tensor<B, 1>,
    metrics: Vec<(&'static str, f64)>,
    weight_time: Duration,
}

#[allow(clippy::too_many_arguments)]
fn dpo_loss<B>(
    config: &DpoConfig,
    settings: &MethodSettings,
    step: usize,
    policy: &CausalLm<B>,
    reference: &CausalLm<B::InnerBackend>,
    precomputed: Option<&[ReferenceLogps]>,
    batch: PairBatch<B>,
    device: &B::Device,
) -> Result<StepOutcome<B>>
where
    B: AutodiffBackend + OtBackend,
{
    let b = batch.pairs;
    let [rows, len] = batch.input_ids.dims();
    let out = policy.forward(batch.input_ids.clone(), batch.attention_mask.clone());
    let logps = next_token_logps(out.logits, batch.input_ids.clone());
    let reference_logps = config.method.uses_reference().then(|| match precomputed {
        Some(rows) => precomputed_tensor::<B>(rows, len - 1, device),
        None => {
            let out = reference.forward(
                batch.input_ids.clone().inner(),
                batch.attention_mask.clone().inner(),
            );
            Tensor::from_inner(next_token_logps(out.logits, batch.input_ids.inner()))
        }
    });
    // The hidden state at position t predicts token t + 1, as the log-probabilities do.
    let hidden = config
        .method
        .needs_hidden_states()
        .then(|| out.hidden.slice([0..rows, 0..len - 1]).detach());
    let mask = batch.response_mask;
    let chosen_nll = chosen_nll(logps.clone(), mask.clone());
    let (out, weights, weight_time) = weighted_loss(
        config,
        settings,
        step,
        logps,
        reference_logps,
        hidden,
        mask.clone(),
    )?;
    let loss = out.loss.clone() + chosen_nll.clone().mul_scalar(config.rpo_alpha);
    let weight_mean =
        |w: Tensor<B, 2>, m: Tensor<B, 2>| scalar((w * m.clone()).sum() / m.sum().clamp_min(1.0));
    let metrics = vec![
        ("loss", scalar(loss.clone())),
        ("nll_loss", scalar(chosen_nll)),
        ("rewards/chosen", scalar(out.chosen_rewards.mean())),
        ("rewards/rejected", scalar(out.rejected_rewards.mean())),
        ("rewards/margins", scalar(out.reward_margins.mean())),
        ("rewards/accuracies", scalar(out.accuracy)),
        ("logps/chosen", scalar(out.chosen_logps.mean())),
        ("logps/rejected", scalar(out.rejected_logps.mean())),
        (
            "otpref/weights_chosen_mean",
            weight_mean(weights.chosen, mask.clone().narrow(0, 0, b)),
        ),
        (
            "otpref/weights_rejected_mean",
            weight_mean(weights.rejected, mask.narrow(0, b, b)),
        ),
    ];
    Ok(StepOutcome {
        loss,
        metrics,
        weight_time,
    })
}

/// The chosen responses' negative log-likelihood per response token (TRL's `nll_loss`): rows
/// `0..b` of `logps` `[2b, len - 1]` over their response `mask`.
fn chosen_nll<B: burn::tensor::backend::Backend>(
    logps: Tensor<B, 2>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let b = mask.dims()[0] / 2;
    response_nll(logps.narrow(0, 0, b), mask.narrow(0, 0, b))
}

/// Mean negative log-likelihood over the tokens where `mask` is 1 (the SFT loss).
fn response_nll<B: burn::tensor::backend::Backend>(
    logps: Tensor<B, 2>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    (logps * mask.clone()).sum().neg() / mask.sum().clamp_min(1.0)
}

/// The method's token weights for a batch whose rows `0..b` are chosen and `b..2b` rejected
/// responses (`mask`: the response masks, `hidden`: the shifted hidden states when needed).
fn pair_weights<B: burn::tensor::backend::Backend + OtBackend>(
    config: &DpoConfig,
    settings: &MethodSettings,
    step: usize,
    hidden: Option<Tensor<B, 3>>,
    mask: Tensor<B, 2>,
) -> Result<otpref::TokenWeights<B>> {
    let b = mask.dims()[0] / 2;
    Ok(token_weights(
        &config.method.weighting(settings, config.common.seed, step),
        ResponseTokens {
            chosen_mask: mask.clone().narrow(0, 0, b),
            rejected_mask: mask.narrow(0, b, b),
            chosen_hidden: hidden.clone().map(|h| h.narrow(0, 0, b)),
            rejected_hidden: hidden.map(|h| h.narrow(0, b, b)),
        },
    )?)
}

/// Token weights for the pairs of one batch (rows `0..b` chosen, `b..2b` rejected) and the
/// weighted DPO loss over them; also the time the weights took.
fn weighted_loss<B: burn::tensor::backend::Backend + OtBackend>(
    config: &DpoConfig,
    settings: &MethodSettings,
    step: usize,
    logps: Tensor<B, 2>,
    reference_logps: Option<Tensor<B, 2>>,
    hidden: Option<Tensor<B, 3>>,
    mask: Tensor<B, 2>,
) -> Result<(otpref::DpoLoss<B>, otpref::TokenWeights<B>, Duration)> {
    let b = mask.dims()[0] / 2;
    let started = Instant::now();
    let weights = pair_weights(config, settings, step, hidden, mask)?;
    let weight_time = started.elapsed();
    let inputs = DpoInputs {
        policy_chosen: logps.clone().narrow(0, 0, b),
        policy_rejected: logps.narrow(0, b, b),
        reference: reference_logps.map(|r| otpref::ReferenceLogps {
            chosen: r.clone().narrow(0, 0, b),
            rejected: r.narrow(0, b, b),
        }),
    };
    let loss_config = DpoLossConfig::new()
        .with_beta(config.beta)
        .with_loss_type(config.method.loss_type(config.loss, settings))
        .with_label_smoothing(config.label_smoothing);
    let out = weighted_dpo_loss(inputs, weights.clone(), &loss_config)?;
    Ok((out, weights, weight_time))
}

/// The method's token weights on the first few held-out pairs, for `weights.html`.
fn weighted_examples<B: burn::tensor::backend::Backend + OtBackend>(
    config: &DpoConfig,
    settings: &MethodSettings,
    policy: &CausalLm<B>,
    pairs: &[TokenizedPair],
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<Vec<super::report::WeightedPair>> {
    let pairs = &pairs[..pairs.len().min(6)];
    let batch = collate_pairs::<B>(pairs, tokenizer.pad_id(), device);
    let [rows, len] = batch.input_ids.dims();
    let out = policy.forward(batch.input_ids.clone(), batch.attention_mask.clone());
    let hidden = config
        .method
        .needs_hidden_states()
        .then(|| out.hidden.slice([0..rows, 0..len - 1]));
    let weights = pair_weights(config, settings, 0, hidden, batch.response_mask)?;
    let host = |t: Tensor<B, 2>| t.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let (chosen, rejected) = (host(weights.chosen), host(weights.rejected));
    let width = len - 1;
    let mut examples = Vec::new();
    for (i, pair) in pairs.iter().enumerate() {
        // Response token k sits at position prompt + k; its weight at the position before it.
        let tokens = |ids: &[u32], weights: &[f32]| -> Result<Vec<(String, f32)>> {
            ids.iter()
                .enumerate()
                .map(|(k, &id)| {
                    let weight = (pair.prompt.len() + k)
                        .checked_sub(1)
                        .map_or(0.0, |at| weights[i * width + at]);
                    Ok((tokenizer.decode(&[id], false)?, weight))
                })
                .collect()
        };
        examples.push(super::report::WeightedPair {
            prompt: tokenizer.decode(&pair.prompt, false)?,
            chosen: tokens(&pair.chosen, &chosen)?,
            rejected: tokens(&pair.rejected, &rejected)?,
        });
    }
    Ok(examples)
}

/// Held-out implicit-reward comparison of `policy` against `reference`, ties counted apart.
fn held_out<B>(
    config: &DpoConfig,
    settings: &MethodSettings,
    policy: &CausalLm<B>,
    reference: &CausalLm<B>,
    pairs: &[TokenizedPair],
    pad: u32,
    device: &B::Device,
) -> Result<HeldOut>
where
    B: burn::tensor::backend::Backend + OtBackend,
{
    let mut result = HeldOut::default();
    let (mut loss_sum, mut margin_sum) = (0.0, 0.0);
    for chunk in pairs.chunks(config.common.batch_size) {
        let batch = collate_pairs::<B>(chunk, pad, device);
        let b = batch.pairs;
        let [rows, len] = batch.input_ids.dims();
        let out = policy.forward(batch.input_ids.clone(), batch.attention_mask.clone());
        let logps = next_token_logps(out.logits, batch.input_ids.clone());
        let reference_logps = config.method.uses_reference().then(|| {
            let out = reference.forward(batch.input_ids.clone(), batch.attention_mask.clone());
            next_token_logps(out.logits, batch.input_ids.clone())
        });
        let hidden = config
            .method
            .needs_hidden_states()
            .then(|| out.hidden.slice([0..rows, 0..len - 1]));
        let mask = batch.response_mask;
        let (out, _, _) = weighted_loss(config, settings, 0, logps, reference_logps, hidden, mask)?;
        loss_sum += scalar(out.loss) * b as f64;
        let margins = out
            .reward_margins
            .into_data()
            .to_vec::<f32>()
            .expect("f32 margins");
        for margin in margins {
            margin_sum += margin as f64;
            match margin.partial_cmp(&0.0) {
                Some(std::cmp::Ordering::Greater) => result.wins += 1,
                Some(std::cmp::Ordering::Less) => result.losses += 1,
                _ => result.ties += 1,
            }
        }
    }
    result.loss = loss_sum / pairs.len() as f64;
    result.margin = margin_sum / pairs.len() as f64;
    Ok(result)
}

/// Writes the held-out record and returns its log line.
fn log_held_out(metrics: &mut MetricsLog, step: usize, held_out: &HeldOut) -> String {
    let total = (held_out.wins + held_out.ties + held_out.losses).max(1) as f64;
    let mut record = Map::new();
    record.insert("step".into(), json!(step));
    record.insert("eval/loss".into(), json!(held_out.loss));
    record.insert(
        "eval/rewards/accuracies".into(),
        json!(held_out.wins as f64 / total),
    );
    record.insert(
        "eval/rewards/ties".into(),
        json!(held_out.ties as f64 / total),
    );
    record.insert("eval/rewards/margins".into(), json!(held_out.margin));
    metrics.write(&record);
    format!(
        "held-out pairs: {} wins, {} ties, {} losses (policy vs reference implicit rewards), loss {:.4}",
        held_out.wins, held_out.ties, held_out.losses, held_out.loss
    )
}

/// A held-out prompt: its ids, its text and, on the built-in task, its problem.
struct EvalPrompt {
    ids: Vec<u32>,
    text: String,
    problem: Option<Problem>,
}

fn eval_prompts(
    eval: &crate::data::Dataset,
    count: usize,
    tokenizer: &Tokenizer,
) -> Result<Vec<EvalPrompt>> {
    let built_in = eval.source.starts_with("built-in");
    let mut prompts = Vec::new();
    for pair in eval.pairs.iter().take(count) {
        let text = match &pair.prompt {
            Text::Plain(text) => text.clone(),
            Text::Conversation(messages) => tokenizer.apply_chat_template(messages, true)?,
        };
        let ids = match &pair.prompt {
            Text::Plain(text) => tokenizer.encode(text, true)?,
            Text::Conversation(messages) => tokenizer.encode_chat(messages, true)?,
        };
        let problem = built_in.then(|| parse_problem(&text)).flatten();
        prompts.push(EvalPrompt { ids, text, problem });
    }
    Ok(prompts)
}

fn parse_problem(prompt: &str) -> Option<Problem> {
    let (a, b) = prompt.strip_suffix('=')?.split_once('+')?;
    Some(Problem {
        a: a.parse().ok()?,
        b: b.parse().ok()?,
    })
}

fn generations<B: burn::tensor::backend::Backend>(
    model: &CausalLm<B>,
    prompts: &[EvalPrompt],
    tokenizer: &Tokenizer,
    max_new_tokens: usize,
    device: &B::Device,
) -> Result<Generations> {
    let (mut solved, mut scored, mut length) = (0, 0, 0);
    let mut examples = Vec::new();
    for chunk in prompts.chunks(64) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| p.ids.clone()).collect();
        let outputs = generate_greedy(model, &ids, max_new_tokens, tokenizer.eos_id(), device);
        for (prompt, output) in chunk.iter().zip(outputs) {
            length += output.len();
            let text = tokenizer.decode(&output, true)?;
            if let Some(problem) = &prompt.problem {
                scored += 1;
                solved += usize::from(problem.is_solved_by(&text));
            }
            if examples.len() < 4 {
                examples.push((prompt.text.clone(), text));
            }
        }
    }
    Ok(Generations {
        success_rate: (scored > 0).then(|| solved as f64 / scored as f64),
        mean_length: length as f64 / prompts.len().max(1) as f64,
        examples,
    })
}

fn print_summary(summary: &DpoSummary) {
    println!("\n== {:?} summary", summary.method);
    let h = &summary.held_out;
    println!(
        "held-out pairs (implicit reward of chosen vs rejected): {} wins, {} ties, {} losses",
        h.wins, h.ties, h.losses
    );
    for (name, g) in [
        ("reference", &summary.reference),
        ("policy", &summary.policy),
    ] {
        let success = g
            .success_rate
            .map_or("n/a (no checkable answers in this data)".into(), |s| {
                format!("{:.1}%", 100.0 * s)
            });
        println!(
            "{name:>9}: success {success}, mean generated length {:.1} tokens",
            g.mean_length
        );
    }
    for (prompt, text) in summary.policy.examples.iter().take(3) {
        println!("  {prompt:?} -> {text:?}");
    }
    println!(
        "token weights: {:.1}% of DPO step time; model saved to {}",
        100.0 * summary.weight_time_share,
        summary.model_dir.display()
    );
}
