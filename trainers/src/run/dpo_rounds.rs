//! The DPO phase in rounds: the given pairs, or on-policy pairs sampled from the reference
//! (and, for iterative DPO, from the current policy every `--resample-every` steps).

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use otpref::OtBackend;

use super::datasets::tokenize;
use super::dpo_config::DpoConfig;
use super::dpo_data::Prepared;
use super::dpo_phases::DpoStep;
use super::model_source::load_for_role;
use super::policy_pairs::{dpo_pairs, round_report, PairSource, PolicyPairsReport};
use super::samples::SampleSettings;
use crate::data::TokenizedPair;
use crate::error::Result;
use crate::hub::{load_adapted_reward_model, LoadOptions};
use crate::methods::reference_logps;
use crate::model::{CausalLm, RewardModel};
use crate::training::Trainer;

/// The DPO phase's rounds of sampling, as ranges of the run's steps: one over the whole phase,
/// or one every `--resample-every` steps (iterative DPO).
pub(super) fn dpo_rounds(config: &DpoConfig) -> Vec<Range<usize>> {
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
pub(super) struct SampledRounds {
    pub(super) reports: Vec<PolicyPairsReport>,
    last: Option<Vec<TokenizedPair>>,
}

/// What every round of the DPO phase reads: the run's settings and data, the frozen
/// reference, the reward model that scores samples.
pub(super) struct DpoContext<'a, B: AutodiffBackend> {
    pub(super) config: &'a DpoConfig,
    pub(super) data: &'a Prepared,
    pub(super) reference: &'a CausalLm<B::InnerBackend>,
    pub(super) scorer: Option<&'a RewardModel<B::InnerBackend>>,
    pub(super) device: &'a B::Device,
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
    pub(super) fn report_of(&self, round: &Range<usize>) -> Result<Option<PolicyPairsReport>> {
        if self.config.policy.pairs_from_policy == 0 {
            return Ok(None);
        }
        round_report(&self.config.common.output, self.index(round)).map(Some)
    }

    /// The pairs a round trains on: the given ones, or on-policy pairs sampled (`fresh`) or
    /// read back; round 0 samples from the reference, later ones from `policy`.
    pub(super) fn round_pairs(
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
    pub(super) fn method(
        &self,
        pairs: Cow<'a, [TokenizedPair]>,
        trainer: &Trainer,
    ) -> DpoStep<'a, B> {
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
pub(super) fn scorer<B: Backend>(
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
