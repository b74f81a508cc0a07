//! The DPO trainer: optional supervised warm-up on the chosen responses (which becomes the
//! frozen reference), then token-weighted DPO with any otpref method; held-out preference
//! metrics (ties counted as ties) and, on the built-in task, the success rate of greedy
//! generations for the policy beside its reference.

use std::path::PathBuf;
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use otpref::OtBackend;
use serde::{Deserialize, Serialize};

use super::config::CommonConfig;
use super::dpo_eval::{
    eval_prompts, generations, held_out, log_held_out, weighted_examples, Generations, HeldOut,
};
use super::model_source::ModelSource;
use super::policy_pairs::PolicyPairsReport;
use crate::error::Result;
use crate::methods::{DpoMethod, DpoObjective};
use crate::model::{CausalLm, LoraConfig};
use crate::say;
use crate::training::{
    drawn, load_module, one_at_a_time, save_module, Checkpoints, Fitted, MetricsLog,
    ParameterCounts, Phase, Replica, StopSignal, Trainer,
};

pub use super::dpo_config::DpoConfig;
use super::dpo_data::Prepared;
use super::dpo_phases::SftStep;
use super::dpo_rounds::{dpo_rounds, scorer, DpoContext, SampledRounds};

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
        let mut loaded = data.source.load_policy::<B>(
            common.lora.config().as_ref(),
            common.lora.frozen_dtype(),
            device,
        )?;
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
