//! The reward-model trainer: Bradley-Terry with no margin, a fixed margin, the data's margins,
//! or APLOT's adaptive margins; optional label noise (APLOT's robustness experiment) and reward
//! centering; held-out pairwise accuracy with ties counted as ties.

use std::path::PathBuf;
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use otpref::OtBackend;
use serde::{Deserialize, Serialize};

use super::best_of_n::{best_of_n, check_prompts, load_policy, BestOfN};
use super::config::{prepare_output, CommonConfig};
use super::datasets::{datasets, tokenize};
use super::dpo_eval::eval_prompts;
use super::model_source::model_and_tokenizer;
use super::samples::SampleSettings;
use crate::data::{Dataset, TokenizedPair};
use crate::error::{Error, Result};
pub use crate::methods::RewardLoss;
use crate::model::{CausalLm, RewardModel};
use crate::say;
use crate::task::SplitMix64;
use crate::tokenizer::Tokenizer;
use crate::training::{
    drawn, one_at_a_time, Checkpoints, MetricsLog, ParameterCounts, Replica, StopSignal, Trainer,
};

pub use super::reward_config::RewardConfig;
pub use super::reward_eval::PairwiseAccuracy;
use super::reward_eval::{accuracy, log_accuracy, margin_points};
use super::reward_phase::RewardStep;

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
        let (lora, frozen) = (common.lora.config(), common.lora.frozen_dtype());
        let mut loaded = source.load_reward_model::<B>(lora.as_ref(), frozen, device)?;
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
