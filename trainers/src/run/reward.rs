//! The reward-model trainer: Bradley-Terry with no margin, a fixed margin, the data's margins,
//! or APLOT's adaptive margins; optional label noise (APLOT's robustness experiment) and reward
//! centering; held-out pairwise accuracy with ties counted as ties.

use std::path::PathBuf;
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use clap::Args;
use otpref::{aplot_margins, AplotConfig, OtBackend};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};

use super::best_of_n::{best_of_n, check_prompts, load_policy, BestOfN, BestOfNArgs};
use super::config::{prepare_output, CommonConfig};
use super::datasets::{datasets, tokenize};
use super::dpo_eval::eval_prompts;
use super::model_source::model_and_tokenizer;
use super::samples::SampleSettings;
use crate::data::{collate_indices, collate_pairs, Dataset, TokenizedPair};
use crate::error::{Error, Result};
pub use crate::methods::RewardLoss;
use crate::methods::{reward_loss, RewardObjective};
use crate::model::{CausalLm, RewardModel};
use crate::say;
use crate::task::SplitMix64;
use crate::tokenizer::Tokenizer;
use crate::training::{
    drawn, one_at_a_time, Checkpoints, Method, MetricsLog, MicroStep, ParameterCounts, Replica,
    StopSignal, Trainer,
};

/// Every setting of the reward trainer.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct RewardConfig {
    /// Settings shared with the DPO trainer.
    #[command(flatten)]
    #[serde(flatten)]
    pub common: CommonConfig,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// The loss.
    #[arg(long, value_enum, default_value_t = RewardLoss::Bt)]
    pub loss: RewardLoss,
    /// Share of training pairs whose labels are flipped (chosen and rejected swapped), in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    pub label_noise: f64,
    /// Reward centering: coefficient of mean((r_c + r_r)²) (TRL's center_rewards_coefficient).
    #[arg(long, default_value_t = 0.01)]
    pub center_rewards: f64,
    /// The margin of --loss hard-margin.
    #[arg(long, default_value_t = 0.5)]
    pub hard_margin: f64,
    /// APLOT's γ: representation similarity against reward closeness.
    #[arg(long, default_value_t = 0.5)]
    pub aplot_gamma: f64,
    /// APLOT's entropic ε.
    #[arg(long, default_value_t = 0.1)]
    pub aplot_epsilon: f64,
    /// APLOT's margin scale.
    #[arg(long, default_value_t = 1.0)]
    pub aplot_scale: f64,
    /// Best-of-n with a policy's samples after training.
    #[command(flatten)]
    #[serde(flatten)]
    pub best_of_n: BestOfNArgs,
}

impl RewardConfig {
    /// The APLOT settings of the run (for the loss and for `margins.html`).
    fn aplot(&self) -> AplotConfig {
        AplotConfig::new()
            .with_gamma(self.aplot_gamma)
            .with_epsilon(self.aplot_epsilon)
            .with_scale(self.aplot_scale)
    }

    /// What the reward model's loss reads from these settings, for `replica`.
    pub fn objective(&self, replica: &Replica) -> RewardObjective {
        RewardObjective {
            replica: replica.clone(),
            loss: self.loss,
            hard_margin: self.hard_margin,
            aplot: self.aplot(),
            center_rewards: self.center_rewards,
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.common.validate()?;
        if self.common.steps == 0 {
            return Err("--steps must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.label_noise) {
            return Err(format!(
                "--label-noise must be in [0, 1], got {}",
                self.label_noise
            ));
        }
        for (flag, value) in [
            ("--center-rewards", self.center_rewards),
            ("--hard-margin", self.hard_margin),
            ("--aplot-gamma", self.aplot_gamma),
            ("--aplot-scale", self.aplot_scale),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(format!("{flag} must be 0 or more, got {value}"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("--lr must be a positive number, got {}", self.lr));
        }
        if !(self.aplot_epsilon.is_finite() && self.aplot_epsilon > 0.0) {
            return Err(format!(
                "--aplot-epsilon must be positive, got {}",
                self.aplot_epsilon
            ));
        }
        if self.loss == RewardLoss::Aplot && self.common.batch_size < 2 {
            return Err("--loss aplot needs --batch-size of at least 2 (OT over the batch)".into());
        }
        self.best_of_n.validate()
    }
}

impl super::cli::TrainerSettings for RewardConfig {
    fn common(&self) -> &CommonConfig {
        &self.common
    }

    fn validate(&self) -> std::result::Result<(), String> {
        RewardConfig::validate(self)
    }

    fn plan_input(&self) -> Result<crate::training::plan::PlanInput> {
        super::plan::plan_input(&self.common, false, false)
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

/// Held-out pairwise accuracy, ties apart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PairwiseAccuracy {
    /// Pairs scored with r_c > r_r.
    pub wins: usize,
    /// Pairs scored with r_c = r_r.
    pub ties: usize,
    /// Pairs scored with r_c < r_r.
    pub losses: usize,
    /// Accuracy on the pairs whose data margin is below the mean margin (the hard ones, e.g.
    /// the built-in task's near misses), when the data has margins.
    pub hard_accuracy: Option<f64>,
    /// Accuracy on the other pairs.
    pub easy_accuracy: Option<f64>,
}

impl PairwiseAccuracy {
    /// wins / pairs.
    pub fn accuracy(&self) -> f64 {
        self.wins as f64 / (self.wins + self.ties + self.losses).max(1) as f64
    }
}

/// The end-of-run summary (also `OUTPUT/summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RewardSummary {
    /// The loss trained.
    pub loss: RewardLoss,
    /// Training labels flipped.
    pub flipped: usize,
    /// Held-out accuracy before training.
    pub before: PairwiseAccuracy,
    /// Held-out accuracy after training.
    pub after: PairwiseAccuracy,
    /// Share of step time spent in APLOT's margins (OT).
    pub margin_time_share: f64,
    /// Where the trained model was saved (a Hugging Face folder).
    pub model_dir: PathBuf,
    /// The signal (Ctrl-C, SIGTERM) that stopped the run before its last step, if one did.
    pub stopped_by: Option<StopSignal>,
    /// Best-of-n with the trained reward model (`--best-of-n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of_n: Option<BestOfN>,
}

/// Runs the reward trainer on backend `B` as `replica` of the run (resuming from
/// `OUTPUT/checkpoints` when `resume`). A secondary replica trains and returns; the main one
/// evaluates, saves and summarises.
pub fn run<B>(
    config: &RewardConfig,
    resume: bool,
    device: &B::Device,
    replica: &Replica,
) -> Result<RewardSummary>
where
    B: AutodiffBackend + OtBackend,
    B::InnerBackend: OtBackend,
{
    let common = &config.common;
    let (source, tokenizer) = model_and_tokenizer(common)?;
    let (train, eval) = datasets(common)?;
    let mut train_pairs = tokenize(&train, &tokenizer, common)?;
    let eval_pairs = tokenize(&eval, &tokenizer, common)?;
    if config.loss == RewardLoss::PointMargin {
        if let Some(i) = train.pairs.iter().position(|p| p.margin.is_none()) {
            return Err(Error::Training(format!(
                "--loss point-margin reads the data's \"margin\", which {} lacks",
                train.locate(i)
            )));
        }
    }
    // What best-of-n needs is checked before training: its prompts and its policy.
    check_prompts(&config.best_of_n, &eval)?;
    let vocab_size = source.config().vocab_size;
    let best_of_n_policy = match (&config.best_of_n.policy, config.best_of_n.best_of_n) {
        (Some(dir), n) if n > 0 => Some(load_policy::<B::InnerBackend>(dir, vocab_size, device)?),
        _ => None,
    };
    let flipped = flip_labels(&mut train_pairs, config.label_noise, common.seed);
    say!(
        "label noise {}: {flipped} of {} training pairs flipped",
        config.label_noise,
        train_pairs.len()
    );
    if replica.is_main() {
        prepare_output(&common.output, config)?;
    }
    // Seeded and drawn by one replica at a time, so each draws what one device would.
    let mut loaded = one_at_a_time(|| {
        B::seed(device, common.seed);
        let mut loaded = source.load_reward_model::<B>(common.lora.config().as_ref(), device)?;
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
    let optimizer = common.optimizer(B::HOST_MEMORY).init::<B, RewardModel<B>>();
    // Before any resume: "before" is the model the run started from, not a checkpoint.
    let pad = tokenizer.pad_id();
    let before = match replica.is_main() {
        true => accuracy(
            &loaded.model.valid(),
            &eval_pairs,
            common.batch_size,
            pad,
            device,
        ),
        false => PairwiseAccuracy::default(),
    };
    say!(
        "held-out accuracy before training: {:.3} ({} ties)",
        before.accuracy(),
        before.ties
    );
    let checkpoints = Checkpoints::new(&common.output, common.keep_checkpoints)
        .with_settings(serde_json::to_value(config).expect("configurations serialise"));
    let (model, optimizer, state) = checkpoints.resume(resume, loaded.model, optimizer, device)?;
    // After any resume: a checkpoint's record reads back in f32.
    let model = match common.lora.frozen_dtype() {
        Some(dtype) => model.with_frozen_dtype(dtype),
        None => model,
    };
    let metrics = MetricsLog::open(&common.output, resume.then_some(state.step))?;
    let mut trainer = Trainer::new(
        common.loop_config(lora.as_ref(), replica),
        train_pairs.len(),
        checkpoints,
        metrics,
        state,
        common.steps,
    );
    let mut method = RewardStep {
        config,
        objective: config.objective(replica),
        pairs: &train_pairs,
        eval_pairs: &eval_pairs,
        pad,
        device,
        margin_time: Duration::ZERO,
    };
    let phase = common.phase(0, common.steps, config.lr);
    let fitted = trainer.fit(&mut method, model, optimizer, &phase, device)?;
    trainer.finish();
    let stopped_by = fitted.stopped;
    let model = fitted.model;
    let step_time = fitted.step_time;
    let margin_time = method.margin_time;

    let trained = model.valid();
    let mut summary = RewardSummary {
        loss: config.loss,
        flipped,
        before,
        after: PairwiseAccuracy::default(),
        margin_time_share: margin_time.as_secs_f64() / step_time.as_secs_f64().max(1e-9),
        model_dir: PathBuf::new(),
        stopped_by,
        best_of_n: None,
    };
    if stopped_by.is_some() {
        say!("stopped before the last step: no final evaluation, no model saved");
        return Ok(summary);
    }
    if !replica.is_main() {
        return Ok(summary);
    }
    summary.after = accuracy(&trained, &eval_pairs, common.batch_size, pad, device);
    say!(
        "{}",
        log_accuracy(trainer.metrics(), common.steps, &summary.after)
    );
    if let Some(policy) = &best_of_n_policy {
        summary.best_of_n = Some(evaluate_best_of_n(
            config, &trained, policy, &eval, &tokenizer, device,
        )?);
    }
    let points = margin_points(config, &trained, &eval_pairs, pad, device)?;
    super::report::write_margins_page(
        &common.output.join("margins.html"),
        "APLOT margins against reward gaps (held-out pairs)",
        &points,
    )?;
    summary.model_dir = common.output.join("model");
    source.save_reward_model(
        &trained,
        lora.as_ref(),
        common.lora.merge_adapters,
        &summary.model_dir,
    )?;
    crate::training::write_json(&common.output.join("summary.json"), &summary)?;
    // A plot that cannot be drawn must not cost the run its results.
    if let Err(e) = super::curves::write_curves(&common.output) {
        eprintln!("warning: {e}");
    }
    print_summary(&summary);
    Ok(summary)
}

/// The reward model's training as a [`Method`]: the chosen and rejected rewards, the run's
/// margins (APLOT's from OT over the batch), the Bradley-Terry loss; held-out accuracy.
struct RewardStep<'a, B: Backend> {
    config: &'a RewardConfig,
    objective: RewardObjective,
    pairs: &'a [TokenizedPair],
    eval_pairs: &'a [TokenizedPair],
    pad: u32,
    device: &'a B::Device,
    margin_time: Duration,
}

impl<B> Method<B> for RewardStep<'_, B>
where
    B: AutodiffBackend + OtBackend,
{
    type Model = RewardModel<B>;

    fn backward(&self, model: &RewardModel<B>, loss: Tensor<B, 1>) -> GradientsParams {
        model.backward(loss)
    }

    fn phase(&self) -> &'static str {
        "reward"
    }

    fn shown(&self) -> &'static [&'static str] {
        &["loss", "accuracy"]
    }

    fn loss(
        &mut self,
        model: &RewardModel<B>,
        indices: &[usize],
        _: usize,
    ) -> Result<MicroStep<B>> {
        let batch = collate_indices::<B>(self.pairs, indices, self.pad, self.device);
        let tokens = batch.num_tokens;
        let outcome = reward_loss(&self.objective, model, batch)?;
        self.margin_time += outcome.margin_time;
        Ok(MicroStep {
            loss: outcome.loss,
            metrics: outcome.metrics,
            tokens,
        })
    }

    fn timing_metrics(&self, step_time: Duration) -> Vec<(&'static str, f64)> {
        let share = self.margin_time.as_secs_f64() / step_time.as_secs_f64().max(1e-9);
        vec![("otpref/margin_time_share", share)]
    }

    fn evaluate(
        &mut self,
        model: &RewardModel<B>,
        step: usize,
        metrics: &mut MetricsLog,
    ) -> Result<Option<String>> {
        let batch_size = self.config.common.batch_size;
        let held_out = accuracy(
            &model.valid(),
            self.eval_pairs,
            batch_size,
            self.pad,
            self.device,
        );
        Ok(Some(log_accuracy(metrics, step, &held_out)))
    }
}

/// Swaps chosen and rejected in a `share` of the pairs (drawn with `seed`); returns how many.
fn flip_labels(pairs: &mut [TokenizedPair], share: f64, seed: u64) -> usize {
    let mut rng = SplitMix64::new(seed ^ 0x0f11_9b1a_be15);
    let mut flipped = 0;
    for pair in pairs.iter_mut() {
        if rng.unit() < share {
            std::mem::swap(&mut pair.chosen, &mut pair.rejected);
            flipped += 1;
        }
    }
    flipped
}

/// (reward gap, APLOT margin) of the first held-out batch, as APLOT would set the margins
/// for the trained model whatever the run's loss.
fn margin_points<B: Backend + OtBackend>(
    config: &RewardConfig,
    model: &RewardModel<B>,
    pairs: &[TokenizedPair],
    pad: u32,
    device: &B::Device,
) -> Result<Vec<(f32, f32)>> {
    let pairs = &pairs[..pairs.len().min(config.common.batch_size.max(2))];
    if pairs.len() < 2 {
        return Ok(Vec::new());
    }
    let batch = collate_pairs::<B>(pairs, pad, device);
    let b = batch.pairs;
    let out = model.forward(batch.input_ids, batch.attention_mask);
    let (chosen, rejected) = (
        out.rewards.clone().narrow(0, 0, b),
        out.rewards.narrow(0, b, b),
    );
    let margins = aplot_margins(
        out.pooled.clone().narrow(0, 0, b),
        out.pooled.narrow(0, b, b),
        chosen.clone(),
        rejected.clone(),
        &config.aplot(),
    )?;
    let host = |t: Tensor<B, 1>| t.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let gaps = host(chosen - rejected);
    Ok(gaps.into_iter().zip(host(margins)).collect())
}

/// Held-out pairwise accuracy; with margins in the data, split at their mean (hard vs easy).
fn accuracy<B: Backend>(
    model: &RewardModel<B>,
    pairs: &[TokenizedPair],
    batch_size: usize,
    pad: u32,
    device: &B::Device,
) -> PairwiseAccuracy {
    let mut result = PairwiseAccuracy::default();
    let mut outcomes = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size) {
        let batch = collate_pairs::<B>(chunk, pad, device);
        let b = batch.pairs;
        let rewards = model
            .forward(batch.input_ids, batch.attention_mask)
            .rewards
            .into_data()
            .to_vec::<f32>()
            .expect("f32 rewards");
        for (i, pair) in chunk.iter().enumerate() {
            let gap = rewards[i] - rewards[b + i];
            let won = gap > 0.0;
            match gap.partial_cmp(&0.0) {
                Some(std::cmp::Ordering::Greater) => result.wins += 1,
                Some(std::cmp::Ordering::Less) => result.losses += 1,
                _ => result.ties += 1,
            }
            outcomes.push((pair.margin, won));
        }
    }
    let margins: Vec<f64> = outcomes.iter().filter_map(|(m, _)| *m).collect();
    if margins.len() == outcomes.len() && !margins.is_empty() {
        let mean = margins.iter().sum::<f64>() / margins.len() as f64;
        let share = |hard: bool| {
            let group: Vec<bool> = outcomes
                .iter()
                .filter(|(m, _)| (m.unwrap() < mean) == hard)
                .map(|(_, won)| *won)
                .collect();
            (!group.is_empty())
                .then(|| group.iter().filter(|&&w| w).count() as f64 / group.len() as f64)
        };
        result.hard_accuracy = share(true);
        result.easy_accuracy = share(false);
    }
    result
}

/// Writes the held-out record and returns its log line.
fn log_accuracy(metrics: &mut MetricsLog, step: usize, accuracy: &PairwiseAccuracy) -> String {
    let mut record = Map::new();
    record.insert("step".into(), json!(step));
    record.insert("eval/accuracy".into(), json!(accuracy.accuracy()));
    let total = (accuracy.wins + accuracy.ties + accuracy.losses).max(1) as f64;
    record.insert("eval/ties".into(), json!(accuracy.ties as f64 / total));
    if let (Some(hard), Some(easy)) = (accuracy.hard_accuracy, accuracy.easy_accuracy) {
        record.insert("eval/accuracy_hard".into(), json!(hard));
        record.insert("eval/accuracy_easy".into(), json!(easy));
    }
    metrics.write(&record);
    format!(
        "held-out accuracy: {:.3} ({} wins, {} ties, {} losses)",
        accuracy.accuracy(),
        accuracy.wins,
        accuracy.ties,
        accuracy.losses
    )
}

/// Best-of-n of the trained reward model on `policy`'s samples, with its log line.
fn evaluate_best_of_n<B: Backend>(
    config: &RewardConfig,
    trained: &RewardModel<B>,
    policy: &CausalLm<B>,
    eval: &Dataset,
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<BestOfN> {
    let args = &config.best_of_n;
    let prompts = eval_prompts(eval, args.best_of_n_prompts, tokenizer)?;
    let settings = SampleSettings {
        per_prompt: args.best_of_n,
        sampling: args.sampling.sampling(config.common.seed),
        max_new_tokens: args.max_new_tokens,
    };
    let result = best_of_n(trained, policy, &prompts, tokenizer, &settings, device)?;
    say!("{}", result.line());
    Ok(result)
}

fn print_summary(summary: &RewardSummary) {
    say!("\n== reward model ({:?}) summary", summary.loss);
    for (name, a) in [("before", &summary.before), ("after", &summary.after)] {
        let split = match (a.hard_accuracy, a.easy_accuracy) {
            (Some(hard), Some(easy)) => format!("; hard pairs {hard:.3}, easy pairs {easy:.3}"),
            _ => String::new(),
        };
        say!(
            "{name:>6}: held-out accuracy {:.3} ({} wins, {} ties, {} losses){split}",
            a.accuracy(),
            a.wins,
            a.ties,
            a.losses
        );
    }
    say!(
        "{} training labels flipped; margins took {:.1}% of step time; model saved to {}",
        summary.flipped,
        100.0 * summary.margin_time_share,
        summary.model_dir.display()
    );
    if let Some(result) = &summary.best_of_n {
        say!("{}", result.line());
    }
}
