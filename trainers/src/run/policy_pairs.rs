//! On-policy preference pairs: K sampled answers per training prompt from the DPO reference,
//! scored by the built-in task's checker or by a reward model, the best paired with the worst.
//!
//! This is how preference data is built for tasks with a checkable answer or a trained reward
//! model (rejection-sampling pairs, online and iterative DPO): the pairs hold the mistakes the
//! model makes itself, which pairs built in advance from a near-perfect model do not.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::dpo_eval::{eval_prompts, is_task_data, EvalPrompt};
use super::reward_scores::reward_scores;
use super::samples::{as_response, sample_answers, SampleSettings, SamplingArgs};
use crate::data::{read_jsonl, write_jsonl, Dataset, PreferencePair, Text};
use crate::error::{Error, Result};
use crate::model::{CausalLm, RewardModel};
use crate::tokenizer::Tokenizer;

/// The DPO trainer's flags for on-policy pairs.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct PolicyPairsArgs {
    /// Train DPO on pairs sampled from the reference instead of the given pairs: K answers per
    /// training prompt, scored by the built-in task's checker (or --reward-model), the best
    /// paired with the worst, written to OUTPUT/policy_pairs.jsonl. 0: the given pairs.
    #[arg(long, default_value_t = 0, value_name = "K")]
    #[serde(default)]
    pub pairs_from_policy: usize,
    /// Score the on-policy samples with this reward model (a folder `reward_trainer` wrote)
    /// instead of the built-in task's checker.
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub reward_model: Option<PathBuf>,
    /// Iterative DPO: sample fresh pairs from the current policy every N DPO steps (the first
    /// round's from the reference as DPO starts; round r's written to
    /// OUTPUT/policy_pairs-round-r.jsonl). 0: sample once.
    #[arg(long, default_value_t = 0, value_name = "N")]
    #[serde(default)]
    pub resample_every: usize,
    /// How the samples are drawn.
    #[command(flatten)]
    #[serde(flatten)]
    pub sampling: SamplingArgs,
}

impl PolicyPairsArgs {
    /// Checks the flags (the data is checked with [`check_scorable`] once read).
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.sampling.sampling(0).check()?;
        if self.resample_every > 0 && self.pairs_from_policy == 0 {
            return Err(
                "--resample-every samples on-policy pairs: give --pairs-from-policy K".into(),
            );
        }
        if self.reward_model.is_some() && self.pairs_from_policy == 0 {
            return Err(
                "--reward-model scores on-policy samples: give --pairs-from-policy K".into(),
            );
        }
        match self.pairs_from_policy {
            0 => Ok(()),
            1 => Err("--pairs-from-policy needs at least 2 samples per prompt to pair".into()),
            _ if self.sampling.temperature == 0.0 => Err("--pairs-from-policy with \
                 --temperature 0 draws K equal samples: give a temperature above 0"
                .into()),
            _ => Ok(()),
        }
    }
}

/// Checks, before training, that the samples for `train`'s prompts can be scored: by the reward
/// model, or by the task's checker on the built-in task (or a file of its problems).
pub fn check_scorable(args: &PolicyPairsArgs, train: &Dataset) -> Result<()> {
    let checkable = train.source.starts_with("built-in") || is_task_data(train);
    if args.pairs_from_policy == 0 || args.reward_model.is_some() || checkable {
        return Ok(());
    }
    Err(Error::invalid(
        Path::new(&train.source),
        "--pairs-from-policy on your own data needs --reward-model DIR to score the samples \
         (the built-in checker knows only the built-in task's problems)",
    ))
}

/// What sampling the pairs found (written to `summary.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PolicyPairsReport {
    /// Prompts sampled.
    pub prompts: usize,
    /// Samples per prompt.
    pub samples_per_prompt: usize,
    /// Mean score of all samples (with the task's checker: the share it accepted).
    pub mean_score: f64,
    /// Pairs made (prompts whose samples differ in score).
    pub pairs: usize,
    /// Prompts skipped because all their samples scored the same.
    pub skipped_all_equal: usize,
}

impl PolicyPairsReport {
    /// The report's log line.
    pub fn line(&self) -> String {
        format!(
            "on-policy pairs: {} samples for each of {} prompts, mean score {:.3}; {} pairs, \
             {} prompts skipped (all samples scored the same)",
            self.samples_per_prompt,
            self.prompts,
            self.mean_score,
            self.pairs,
            self.skipped_all_equal
        )
    }
}

/// One pair per prompt whose answers differ in score: the first highest-scored answer chosen,
/// the first lowest-scored rejected, their score difference as TRL's `margin`; prompts whose
/// answers all score the same are skipped and counted. `answers[i]` and `scores[i]` belong to
/// `prompts[i]`.
pub fn pair_answers(
    prompts: &[EvalPrompt],
    answers: &[Vec<String>],
    scores: &[Vec<f64>],
) -> (Vec<PreferencePair>, PolicyPairsReport) {
    let mut report = PolicyPairsReport {
        prompts: prompts.len(),
        samples_per_prompt: answers.first().map_or(0, Vec::len),
        ..PolicyPairsReport::default()
    };
    let mut pairs = Vec::new();
    let (mut total, mut count) = (0.0, 0usize);
    for ((prompt, answers), scores) in prompts.iter().zip(answers).zip(scores) {
        total += scores.iter().sum::<f64>();
        count += scores.len();
        let (mut best, mut worst) = (0, 0);
        for (j, &score) in scores.iter().enumerate() {
            if score > scores[best] {
                best = j;
            }
            if score < scores[worst] {
                worst = j;
            }
        }
        if scores[best] > scores[worst] {
            pairs.push(PreferencePair {
                prompt: prompt.prompt.clone(),
                chosen: as_response(&prompt.prompt, &answers[best]),
                rejected: as_response(&prompt.prompt, &answers[worst]),
                margin: Some(scores[best] - scores[worst]),
                chosen_weights: None,
                rejected_weights: None,
            });
        } else {
            report.skipped_all_equal += 1;
        }
    }
    report.pairs = pairs.len();
    report.mean_score = total / count.max(1) as f64;
    (pairs, report)
}

/// The built-in task's checker as scores: 1 for a correct answer, 0 otherwise.
pub fn checker_scores(prompts: &[EvalPrompt], answers: &[Vec<String>]) -> Result<Vec<Vec<f64>>> {
    prompts
        .iter()
        .zip(answers)
        .map(|(prompt, answers)| {
            let problem = prompt.problem.as_ref().ok_or_else(|| {
                Error::Training(format!(
                    "the built-in checker cannot score answers to {:?}: it is not a problem of \
                     the built-in task (score them with --reward-model DIR)",
                    prompt.text
                ))
            })?;
            Ok(answers
                .iter()
                .map(|a| f64::from(u8::from(problem.is_solved_by(a))))
                .collect())
        })
        .collect()
}

/// A reward model's scores of the answers.
pub fn reward_model_scores<B: Backend>(
    model: &RewardModel<B>,
    prompts: &[EvalPrompt],
    answers: &[Vec<String>],
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<Vec<Vec<f64>>> {
    let items: Vec<(&Text, &str)> = prompts
        .iter()
        .zip(answers)
        .flat_map(|(p, answers)| answers.iter().map(move |a| (&p.prompt, a.as_str())))
        .collect();
    let flat = reward_scores(model, &items, tokenizer, device)?;
    let k = answers.first().map_or(1, Vec::len).max(1);
    Ok(flat
        .chunks(k)
        .map(|row| row.iter().map(|&s| f64::from(s)).collect())
        .collect())
}

/// What the DPO trainer samples its on-policy pairs with.
pub struct PairSource<'a, B: Backend> {
    /// The model the answers are sampled from (the reference; the current policy in later
    /// rounds of iterative DPO).
    pub model: &'a CausalLm<B>,
    /// Scores the answers (`None`: the built-in task's checker).
    pub reward_model: Option<&'a RewardModel<B>>,
    /// How many answers per prompt, drawn how.
    pub settings: SampleSettings,
}

/// Round `round`'s on-policy pairs of the DPO phase: sampled over `train`'s prompts as the round
/// starts (`fresh`) and written to `OUTPUT/policy_pairs.jsonl` (round 0) or
/// `policy_pairs-round-R.jsonl`, with the report beside it; read back from there when a run
/// resumes inside the round.
pub fn dpo_pairs<B: Backend>(
    source: &PairSource<'_, B>,
    train: &Dataset,
    tokenizer: &Tokenizer,
    output: &Path,
    round: usize,
    fresh: bool,
    device: &B::Device,
) -> Result<(Dataset, PolicyPairsReport)> {
    let (path, report_path) = round_files(output, round);
    if !fresh {
        return Ok((read_jsonl(&path)?, round_report(output, round)?));
    }
    let prompts = eval_prompts(train, train.len(), tokenizer)?;
    let answers = sample_answers(source.model, &prompts, tokenizer, &source.settings, device)?;
    let scores = match source.reward_model {
        Some(model) => reward_model_scores(model, &prompts, &answers, tokenizer, device)?,
        None => checker_scores(&prompts, &answers)?,
    };
    let (pairs, report) = pair_answers(&prompts, &answers, &scores);
    // A later round may find none (every prompt answered alike): its caller decides.
    if pairs.is_empty() && round == 0 {
        return Err(Error::Training(format!(
            "--pairs-from-policy: no prompt's {} samples differ in score, so there is no pair \
             to train on: raise --temperature or --pairs-from-policy",
            source.settings.per_prompt
        )));
    }
    // Every replica samples the same pairs (seeded); the main one writes them.
    if crate::training::speaks() {
        write_jsonl(&path, &pairs)?;
        crate::training::write_json(&report_path, &report)?;
    }
    Ok((
        Dataset::from_pairs(path.display().to_string(), pairs),
        report,
    ))
}

/// The pairs file and the report of round `round` in `output`.
fn round_files(output: &Path, round: usize) -> (PathBuf, PathBuf) {
    let stem = match round {
        0 => "policy_pairs".to_string(),
        r => format!("policy_pairs-round-{r}"),
    };
    (
        output.join(format!("{stem}.jsonl")),
        output.join(format!("{stem}.json")),
    )
}

/// The report of round `round`'s pairs, as sampling wrote it.
pub fn round_report(output: &Path, round: usize) -> Result<PolicyPairsReport> {
    let (_, path) = round_files(output, round);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(&path, e.to_string()))
}
