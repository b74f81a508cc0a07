//! The DPO trainer: optional supervised warm-up on the chosen responses (which becomes the
//! frozen reference), then token-weighted DPO with any otpref method; held-out preference
//! metrics (ties counted as ties) and, on the built-in task, the success rate of greedy
//! generations for the policy beside its reference.

use std::borrow::Cow;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use clap::Args;
use otpref::OtBackend;
use serde::{Deserialize, Serialize};

use super::config::{prepare_output, CommonConfig};
use super::datasets::{datasets, tokenize};
use super::dpo_eval::{
    eval_prompts, generations, held_out, log_held_out, weighted_examples, Generations, HeldOut,
};
use super::model_source::{load_for_role, model_and_tokenizer, ModelSource};
use super::policy_pairs::{
    check_scorable, dpo_pairs, round_report, PairSource, PolicyPairsArgs, PolicyPairsReport,
};
use super::samples::SampleSettings;
use crate::data::{collate_indices, Dataset, TokenizedPair};
use crate::error::{Error, Result};
use crate::hub::{load_adapted_reward_model, LoadOptions};
use crate::methods::{
    dpo_loss, reference_logps, sft_loss, DpoLoss, DpoMethod, DpoObjective, MethodSettings,
    ReferenceLogps,
};
use crate::model::{CausalLm, LoraConfig, RewardModel};
use crate::say;
use crate::tokenizer::Tokenizer;
use crate::training::{
    drawn, load_module, one_at_a_time, save_module, scalar, Checkpoints, Fitted, Method,
    MetricsLog, MicroStep, ParameterCounts, Phase, Replica, StopSignal, Trainer,
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
    /// Longest greedy generation (and on-policy sample), in tokens.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// On-policy pairs: sampled from the reference and scored by the task's checker.
    #[command(flatten)]
    #[serde(flatten)]
    pub policy: PolicyPairsArgs,
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
        if self.method.needs_given_weights() && self.policy.pairs_from_policy > 0 {
            return Err("--method given reads token weights from the data, and \
                 --pairs-from-policy samples pairs that have none: use another --method"
                .into());
        }
        self.policy.validate()
    }

    /// What the DPO family's loss reads from these settings.
    pub fn objective(&self) -> DpoObjective {
        DpoObjective {
            method: self.method,
            loss: self.loss,
            beta: self.beta,
            label_smoothing: self.label_smoothing,
            rpo_alpha: self.rpo_alpha,
            seed: self.common.seed,
            settings: MethodSettings {
                simpo_gamma: self.simpo_gamma,
                ld_alpha: self.ld_alpha,
                otpo_epsilon: self.otpo_epsilon,
                otpo_marginal_penalty: self.otpo_marginal_penalty,
            },
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

    fn plan_input(&self) -> Result<crate::training::plan::PlanInput> {
        super::plan::plan_input(&self.common, true, !self.precompute_ref)
    }

    fn train<B>(
        &self,
        resume: bool,
        device: &B::Device,
        replica: &Replica,
    ) -> Result<Option<StopSignal>>
    where
        B: AutodiffBackend + OtBackend,
        B::InnerBackend: OtBackend,
    {
        run::<B>(self, resume, device, replica).map(|summary| summary.stopped_by)
    }
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
    /// The signal (Ctrl-C, SIGTERM) that stopped the run before its last step, if one did.
    pub stopped_by: Option<StopSignal>,
    /// What sampling found, when DPO trained on on-policy pairs (`--pairs-from-policy`): one
    /// report per round (one round unless `--resample-every`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_pairs: Vec<PolicyPairsReport>,
}

/// What a run reads before training: the model source, its tokenizer, the data.
struct Prepared {
    source: ModelSource,
    tokenizer: Tokenizer,
    train: Dataset,
    eval: Dataset,
    train_pairs: Vec<TokenizedPair>,
    eval_pairs: Vec<TokenizedPair>,
}

impl Prepared {
    fn read(config: &DpoConfig) -> Result<Self> {
        let common = &config.common;
        let (source, tokenizer) = model_and_tokenizer(common)?;
        let (train, eval) = datasets(common)?;
        check_scorable(&config.policy, &train)?;
        if config.method.needs_given_weights() {
            check_token_weights(&train)?;
            check_token_weights(&eval)?;
        }
        let train_pairs = tokenize(&train, &tokenizer, common)?;
        let eval_pairs = tokenize(&eval, &tokenizer, common)?;
        if crate::training::speaks() {
            prepare_output(&common.output, config)?;
        }
        Ok(Self {
            source,
            tokenizer,
            train,
            eval,
            train_pairs,
            eval_pairs,
        })
    }
}

/// `--method given`'s requirement: every pair of `data` carries both responses' token weights.
/// (Their lengths are checked against the tokens when the pairs are tokenized.)
fn check_token_weights(data: &Dataset) -> Result<()> {
    for (i, pair) in data.pairs.iter().enumerate() {
        let fields = [
            ("chosen_weights", &pair.chosen_weights),
            ("rejected_weights", &pair.rejected_weights),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, weights)| weights.is_none()) {
            return Err(Error::Training(format!(
                "--method given reads each pair's \"chosen_weights\" and \"rejected_weights\" \
                 (one weight per response token), and {} has no \"{field}\"",
                data.locate(i)
            )));
        }
    }
    Ok(())
}

/// Runs the DPO trainer on backend `B` (resuming from `OUTPUT/checkpoints` when `resume`):
/// SFT then DPO, two fits of the same loop.
pub fn run<B>(
    config: &DpoConfig,
    resume: bool,
    device: &B::Device,
    replica: &Replica,
) -> Result<DpoSummary>
where
    B: AutodiffBackend + OtBackend,
    B::InnerBackend: OtBackend,
{
    let common = &config.common;
    let data = Prepared::read(config)?;
    // Read before training, so that a wrong folder fails at once and not after SFT.
    let scorer = scorer::<B::InnerBackend>(config, &data, device)?;
    // Seeded and drawn by one replica at a time, so each draws what one device would.
    let mut loaded = one_at_a_time(|| {
        B::seed(device, common.seed);
        let mut loaded = data
            .source
            .load_policy::<B>(common.lora.config().as_ref(), device)?;
        loaded.model = drawn(loaded.model);
        Result::Ok(loaded)
    })?;
    if common.gradient_checkpointing {
        loaded.model = loaded.model.with_gradient_checkpointing();
    }
    let lora = loaded.lora;
    // Replicas start from the main one's parameters (fresh adapters, the built-in model).
    loaded.model = replica.main_parameters(loaded.model)?;
    say!("{}", ParameterCounts::of(&loaded.model));
    let new_optimizer = || common.optimizer(B::HOST_MEMORY).init::<B, CausalLm<B>>();
    let checkpoints = Checkpoints::new(&common.output, common.keep_checkpoints)
        .with_settings(serde_json::to_value(config).expect("configurations serialise"));
    let (policy, optimizer, state) =
        checkpoints.resume(resume, loaded.model, new_optimizer(), device)?;
    // After any resume: a checkpoint's record reads back in f32.
    let policy = match common.lora.frozen_dtype() {
        Some(dtype) => policy.with_frozen_dtype(dtype),
        None => policy,
    };
    let metrics = MetricsLog::open(&common.output, resume.then_some(state.step))?;
    let total = config.sft_steps + common.steps;
    let loop_config = common.loop_config(lora.as_ref(), replica);
    let mut trainer = Trainer::new(
        loop_config,
        data.train_pairs.len(),
        checkpoints,
        metrics,
        state,
        total,
    );
    let pad = data.tokenizer.pad_id();

    let sft = common.phase(0, config.sft_steps, config.sft_lr);
    let mut warm_up = SftStep {
        pairs: &data.train_pairs,
        pad,
        device,
    };
    let fitted = trainer.fit(&mut warm_up, policy, optimizer, &sft, device)?;
    if let Some(signal) = fitted.stopped {
        trainer.finish();
        return Ok(DpoSummary::stopped(config.method, signal));
    }
    let (mut policy, mut optimizer) = (fitted.model, fitted.optimizer);
    let starts_dpo = trainer.next_step() == config.sft_steps;
    if starts_dpo {
        if let (Some(lora), true) = (&lora, config.sft_steps > 0) {
            // The warm-up's adapters become part of the frozen base, and DPO trains fresh ones
            // on top (as one merges an SFT adapter before DPO with PEFT). Seeded by the step,
            // so that a resumed run draws the same adapters.
            let fresh = one_at_a_time(|| {
                B::seed(device, common.seed.wrapping_add(config.sft_steps as u64));
                drawn(policy.merge_lora().with_lora(lora, device))
            });
            policy = replica.main_parameters(fresh)?;
        }
        optimizer = new_optimizer();
    }
    let source = &data.source;
    let reference = reference_model(config, source, &policy, lora.is_some(), starts_dpo, device)?;
    let context = DpoContext {
        config,
        data: &data,
        reference: &reference,
        scorer: scorer.as_ref(),
        device,
    };
    let mut fitted = Fitted {
        model: policy,
        optimizer,
        stopped: None,
        step_time: Duration::ZERO,
    };
    let mut sampled = SampledRounds::default();
    let mut weight_time = Duration::ZERO;
    for round in dpo_rounds(config) {
        let (step, step_time) = (trainer.next_step(), fitted.step_time);
        if step >= round.end {
            sampled.reports.extend(context.report_of(&round)?);
            continue;
        }
        let fresh = step == round.start;
        let pairs =
            context.round_pairs(&round, fresh, &fitted.model, &mut sampled, &mut trainer)?;
        let mut method = context.method(pairs, &trainer);
        let phase = Phase {
            end: round.end,
            ..common.phase(config.sft_steps, common.steps, config.lr)
        };
        fitted = trainer.fit(&mut method, fitted.model, fitted.optimizer, &phase, device)?;
        fitted.step_time += step_time;
        weight_time += method.weight_time;
        if let Some(signal) = fitted.stopped {
            trainer.finish();
            return Ok(DpoSummary::stopped(config.method, signal));
        }
    }
    trainer.finish();
    if !replica.is_main() {
        return Ok(DpoSummary::unsummarised(config.method));
    }
    let share = weight_time.as_secs_f64() / fitted.step_time.as_secs_f64().max(1e-9);
    let trained = fitted.model.valid();
    let objective = config.objective();
    let outcome = Outcome {
        trained: &trained,
        reference: &reference,
        objective: &objective,
        lora: lora.as_ref(),
        weight_time_share: share,
        policy_pairs: sampled.reports,
    };
    summarise(config, &data, outcome, trainer.metrics(), device)
}

/// What the DPO phase ends with.
struct Outcome<'a, B: Backend> {
    trained: &'a CausalLm<B>,
    reference: &'a CausalLm<B>,
    objective: &'a DpoObjective,
    lora: Option<&'a LoraConfig>,
    weight_time_share: f64,
    policy_pairs: Vec<PolicyPairsReport>,
}

/// The end of a finished run: held-out pairs and generations of the policy beside its
/// reference, `weights.html`, the saved model, `summary.json`, the curves and the printed
/// summary.
fn summarise<B: Backend + OtBackend>(
    config: &DpoConfig,
    data: &Prepared,
    outcome: Outcome<'_, B>,
    metrics: &mut MetricsLog,
    device: &B::Device,
) -> Result<DpoSummary> {
    let common = &config.common;
    let (trained, reference, tokenizer) = (outcome.trained, outcome.reference, &data.tokenizer);
    let pad = tokenizer.pad_id();
    let held_out = held_out(
        outcome.objective,
        common.batch_size,
        trained,
        reference,
        &data.eval_pairs,
        pad,
        device,
    )?;
    let total = config.sft_steps + common.steps;
    say!("{}", log_held_out(metrics, total, &held_out));
    let prompts = eval_prompts(&data.eval, config.eval_prompts, tokenizer)?;
    let new_tokens = config.max_new_tokens;
    let reference_generations = generations(reference, &prompts, tokenizer, new_tokens, device)?;
    let policy_generations = generations(trained, &prompts, tokenizer, new_tokens, device)?;

    let examples = weighted_examples(
        outcome.objective,
        trained,
        &data.eval_pairs,
        tokenizer,
        device,
    )?;
    let title = format!("{:?} token weights on held-out pairs", config.method);
    super::report::write_weights_page(&common.output.join("weights.html"), &title, &examples)?;
    let model_dir = common.output.join("model");
    let merge = common.lora.merge_adapters;
    data.source
        .save_policy(trained, outcome.lora, merge, &model_dir)?;
    let summary = DpoSummary {
        method: config.method,
        held_out,
        reference: reference_generations,
        policy: policy_generations,
        weight_time_share: outcome.weight_time_share,
        model_dir,
        stopped_by: None,
        policy_pairs: outcome.policy_pairs,
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
    /// The summary of a run stopped by `signal` before its last step.
    fn stopped(method: DpoMethod, signal: StopSignal) -> Self {
        say!("stopped before the last step: no final evaluation, no model saved");
        Self {
            stopped_by: Some(signal),
            ..Self::unsummarised(method)
        }
    }

    /// A run that ends without a summary (a secondary replica's, or one stopped early).
    fn unsummarised(method: DpoMethod) -> Self {
        Self {
            method,
            held_out: HeldOut::default(),
            reference: Generations::default(),
            policy: Generations::default(),
            weight_time_share: 0.0,
            model_dir: PathBuf::new(),
            stopped_by: None,
            policy_pairs: Vec::new(),
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
        if crate::training::speaks() {
            save_module(&frozen, &path)?;
        }
        return Ok(frozen);
    }
    load_module(CausalLm::new(source.config(), device), &path, device)
}

/// The DPO phase's rounds of sampling, as ranges of the run's steps: one over the whole phase,
/// or one every `--resample-every` steps (iterative DPO).
fn dpo_rounds(config: &DpoConfig) -> Vec<Range<usize>> {
    let (start, steps) = (config.sft_steps, config.common.steps);
    let every = match config.policy.resample_every {
        0 => steps,
        n => n,
    };
    (start..start + steps)
        .step_by(every)
        .map(|first| first..(first + every).min(start + steps))
        .collect()
}

/// The reports of the rounds sampled so far, and the last round's pairs (a round whose
/// samples all score alike trains on them again).
#[derive(Default)]
struct SampledRounds {
    reports: Vec<PolicyPairsReport>,
    last: Option<Vec<TokenizedPair>>,
}

/// What every round of the DPO phase reads: the run's settings and data, the frozen
/// reference, the reward model that scores samples.
struct DpoContext<'a, B: AutodiffBackend> {
    config: &'a DpoConfig,
    data: &'a Prepared,
    reference: &'a CausalLm<B::InnerBackend>,
    scorer: Option<&'a RewardModel<B::InnerBackend>>,
    device: &'a B::Device,
}

impl<'a, B> DpoContext<'a, B>
where
    B: AutodiffBackend + OtBackend,
    B::InnerBackend: OtBackend,
{
    /// The index of the round that starts at step `round.start`.
    fn index(&self, round: &Range<usize>) -> usize {
        let every = self.config.policy.resample_every.max(1);
        (round.start - self.config.sft_steps) / every
    }

    /// The report of a round a resumed run has already trained on on-policy pairs.
    fn report_of(&self, round: &Range<usize>) -> Result<Option<PolicyPairsReport>> {
        if self.config.policy.pairs_from_policy == 0 {
            return Ok(None);
        }
        round_report(&self.config.common.output, self.index(round)).map(Some)
    }

    /// The pairs a round trains on: the given ones, or on-policy pairs sampled (`fresh`) or
    /// read back; round 0 samples from the reference, later ones from `policy`.
    fn round_pairs(
        &self,
        round: &Range<usize>,
        fresh: bool,
        policy: &CausalLm<B>,
        sampled: &mut SampledRounds,
        trainer: &mut Trainer,
    ) -> Result<Cow<'a, [TokenizedPair]>> {
        let index = self.index(round);
        let current;
        let sampler = match index {
            0 => self.reference,
            _ => {
                current = policy.valid();
                &current
            }
        };
        let pairs = on_policy_pairs(
            self.config,
            self.data,
            sampler,
            self.scorer,
            (index, fresh),
            self.device,
        )?;
        let Some((pairs, report)) = pairs else {
            return Ok(Cow::Borrowed(&self.data.train_pairs[..]));
        };
        trainer.println(&format!("round {index}: {}", report.line()));
        sampled.reports.push(report);
        let pairs = match (pairs.is_empty(), sampled.last.take()) {
            (true, Some(previous)) => {
                trainer.println("no new pairs: training on the last round's again");
                previous
            }
            _ => pairs,
        };
        trainer.set_train_len(pairs.len());
        sampled.last = Some(pairs.clone());
        Ok(Cow::Owned(pairs))
    }

    /// The DPO method on `pairs` (with the reference's log-probabilities precomputed over
    /// them when the run asks for it).
    fn method(&self, pairs: Cow<'a, [TokenizedPair]>, trainer: &Trainer) -> DpoStep<'a, B> {
        let (config, pad) = (self.config, self.data.tokenizer.pad_id());
        let precomputed = config.precompute_ref.then(|| {
            trainer.println(&format!(
                "precomputing the reference's log-probabilities over {} pairs",
                pairs.len()
            ));
            reference_logps(
                self.reference,
                &pairs,
                config.common.batch_size,
                pad,
                self.device,
            )
        });
        DpoStep {
            config,
            objective: config.objective(),
            reference: self.reference,
            precomputed,
            pairs,
            eval_pairs: &self.data.eval_pairs,
            pad,
            device: self.device,
            weight_time: Duration::ZERO,
        }
    }
}

/// Round `round`'s on-policy pairs, tokenized, when the run asks for them: sampled from
/// `sampler` (the reference in round 0, the current policy later) as the round starts
/// (`fresh`), read back from the output folder on a resume inside the round.
fn on_policy_pairs<B: Backend>(
    config: &DpoConfig,
    data: &Prepared,
    sampler: &CausalLm<B>,
    scorer: Option<&RewardModel<B>>,
    (round, fresh): (usize, bool),
    device: &B::Device,
) -> Result<Option<(Vec<TokenizedPair>, PolicyPairsReport)>> {
    let (common, args) = (&config.common, &config.policy);
    if args.pairs_from_policy == 0 {
        return Ok(None);
    }
    // Round 0 draws from the run's seed; each later round from a stream of its own.
    let seed = common.seed ^ (round as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
    let source = PairSource {
        model: sampler,
        reward_model: scorer,
        settings: SampleSettings {
            per_prompt: args.pairs_from_policy,
            sampling: args.sampling.sampling(seed),
            max_new_tokens: config.max_new_tokens,
        },
    };
    let tokenizer = &data.tokenizer;
    let output = &common.output;
    let (pairs, report) = dpo_pairs(
        &source,
        &data.train,
        tokenizer,
        output,
        round,
        fresh,
        device,
    )?;
    Ok(Some((tokenize(&pairs, tokenizer, common)?, report)))
}

/// The reward model that scores on-policy samples, when the run gives one.
fn scorer<B: Backend>(
    config: &DpoConfig,
    data: &Prepared,
    device: &B::Device,
) -> Result<Option<RewardModel<B>>> {
    match (&config.policy.reward_model, config.policy.pairs_from_policy) {
        (Some(dir), k) if k > 0 => {
            let vocab_size = data.source.config().vocab_size;
            Ok(Some(load_scorer::<B>(dir, vocab_size, device)?))
        }
        _ => Ok(None),
    }
}

/// The reward model that scores on-policy samples (`--reward-model`), checked to share the
/// policy's vocabulary.
fn load_scorer<B: Backend>(
    dir: &std::path::Path,
    vocab_size: usize,
    device: &B::Device,
) -> Result<RewardModel<B>> {
    let options = LoadOptions::default();
    load_for_role(
        dir,
        "--reward-model",
        vocab_size,
        |folder| folder.load_reward_model::<B>(&options, device),
        |adapter| {
            let (base, model) = load_adapted_reward_model::<B>(adapter, &options, device)?;
            Ok((base, model.merge_lora()))
        },
    )
}

/// The supervised warm-up as a [`Method`]: the chosen responses' NLL.
struct SftStep<'a, B: Backend> {
    pairs: &'a [TokenizedPair],
    pad: u32,
    device: &'a B::Device,
}

impl<B: AutodiffBackend> Method<B> for SftStep<'_, B> {
    type Model = CausalLm<B>;

    fn backward(&self, model: &CausalLm<B>, loss: Tensor<B, 1>) -> GradientsParams {
        model.backward(loss)
    }

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

    /// The SFT loss is a mean over the chosen responses' tokens (EOS included).
    fn loss_items(&self, indices: &[usize]) -> Option<usize> {
        Some(indices.iter().map(|&i| self.pairs[i].chosen.len()).sum())
    }
}

/// The DPO phase as a [`Method`]: token weights, the weighted DPO loss, held-out pairs.
struct DpoStep<'a, B: AutodiffBackend> {
    config: &'a DpoConfig,
    objective: DpoObjective,
    reference: &'a CausalLm<B::InnerBackend>,
    precomputed: Option<Vec<ReferenceLogps>>,
    pairs: Cow<'a, [TokenizedPair]>,
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

    fn backward(&self, model: &CausalLm<B>, loss: Tensor<B, 1>) -> GradientsParams {
        model.backward(loss)
    }

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
        let batch = collate_indices::<B>(&self.pairs[..], indices, self.pad, self.device);
        let tokens = batch.num_tokens;
        let precomputed = self
            .precomputed
            .as_ref()
            .map(|all| indices.iter().map(|&i| all[i].clone()).collect::<Vec<_>>());
        let outcome = dpo_loss(
            &self.objective,
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
            &self.objective,
            self.config.common.batch_size,
            &model.valid(),
            self.reference,
            self.eval_pairs,
            self.pad,
            self.device,
        )?;
        Ok(Some(log_held_out(metrics, step, &held_out)))
    }
}

fn print_summary(summary: &DpoSummary) {
    say!("\n== {:?} summary", summary.method);
    for (round, report) in summary.policy_pairs.iter().enumerate() {
        say!("round {round}: {}", report.line());
    }
    let h = &summary.held_out;
    say!(
        "held-out pairs (implicit reward of chosen vs rejected): {} wins, {} ties, {} losses",
        h.wins,
        h.ties,
        h.losses
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
        say!(
            "{name:>9}: success {success}, mean generated length {:.1} tokens",
            g.mean_length
        );
    }
    for (prompt, text) in summary.policy.examples.iter().take(3) {
        say!("  {prompt:?} -> {text:?}");
    }
    say!(
        "token weights: {:.1}% of DPO step time; model saved to {}",
        100.0 * summary.weight_time_share,
        summary.model_dir.display()
    );
}
