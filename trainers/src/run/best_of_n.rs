//! Best-of-n: what a reward model is for. For held-out prompts of the built-in task, n answers
//! sampled from a policy; the success rate of the answer the reward model ranks first, beside
//! a random choice among the n and the oracle (any correct answer).

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::dpo_eval::{is_task_data, EvalPrompt};
use super::model_source::load_for_role;
use super::policy_pairs::{checker_scores, reward_model_scores};
use super::samples::{sample_answers, SampleSettings, SamplingArgs};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::hub::{load_adapted_causal_lm, LoadOptions};
use crate::model::{CausalLm, RewardModel};
use crate::tokenizer::Tokenizer;

/// The reward trainer's best-of-n flags.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct BestOfNArgs {
    /// Best-of-n after training (built-in task): N answers per held-out prompt sampled from
    /// --policy; the success of the answer the reward model ranks first, beside random choice
    /// and the oracle. 0: off.
    #[arg(long, default_value_t = 0, value_name = "N")]
    #[serde(default)]
    pub best_of_n: usize,
    /// The policy sampled for best-of-n: a folder the DPO trainer wrote (OUTPUT/model).
    #[arg(long, value_name = "DIR")]
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Held-out prompts of best-of-n.
    #[arg(long, default_value_t = 128)]
    #[serde(default = "default_prompts")]
    pub best_of_n_prompts: usize,
    /// Longest sampled answer, in tokens.
    #[arg(long, default_value_t = 64)]
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
    /// How the answers are drawn.
    #[command(flatten)]
    #[serde(flatten)]
    pub sampling: SamplingArgs,
}

fn default_prompts() -> usize {
    128
}

fn default_new_tokens() -> usize {
    64
}

impl BestOfNArgs {
    /// Checks the flags (the held-out prompts are checked with [`check_prompts`] once read).
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.sampling.sampling(0).check()?;
        match (self.best_of_n, &self.policy) {
            (0, None) => Ok(()),
            (0, Some(_)) => Err("--policy is sampled for best-of-n: give --best-of-n N".into()),
            (1, _) => Err("--best-of-n needs at least 2 answers per prompt to choose from".into()),
            (_, None) => Err(
                "--best-of-n samples a policy: give --policy DIR (a folder the \
                 DPO trainer wrote, e.g. runs/latest/model)"
                    .into(),
            ),
            _ if self.best_of_n_prompts == 0 || self.max_new_tokens == 0 => {
                Err("--best-of-n-prompts and --max-new-tokens must be at least 1".into())
            }
            _ => Ok(()),
        }
    }
}

/// Checks, before training, that the task's checker can score answers to `eval`'s prompts
/// (the built-in task, or a file of its problems such as `policy_pairs.jsonl`).
pub fn check_prompts(args: &BestOfNArgs, eval: &Dataset) -> Result<()> {
    if args.best_of_n == 0 || eval.source.starts_with("built-in") || is_task_data(eval) {
        return Ok(());
    }
    Err(Error::invalid(
        Path::new(&eval.source),
        "--best-of-n scores answers with the built-in task's checker, and these held-out \
         prompts are not all its problems (\"a+b=\"): leave out --data, or give data of the task",
    ))
}

/// Best-of-n success rates on held-out prompts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BestOfN {
    /// Prompts sampled.
    pub prompts: usize,
    /// Answers per prompt.
    pub n: usize,
    /// Success of the answer the reward model ranks first (answers tied at the top reward
    /// count by the share of them that are correct).
    pub reward_model: f64,
    /// Expected success of an answer chosen at random (the policy's sampled success rate).
    pub random: f64,
    /// Share of prompts with at least one correct answer (a perfect ranker's success).
    pub oracle: f64,
}

impl BestOfN {
    /// The result's log line.
    pub fn line(&self) -> String {
        format!(
            "best-of-{} on {} held-out prompts: reward model's pick {:.1}% correct, random \
             pick {:.1}%, oracle {:.1}%",
            self.n,
            self.prompts,
            100.0 * self.reward_model,
            100.0 * self.random,
            100.0 * self.oracle
        )
    }
}

/// Best-of-n from the answers' correctness (1 or 0) and their rewards, per prompt.
pub fn best_of_n_rates(correct: &[Vec<f64>], rewards: &[Vec<f64>]) -> BestOfN {
    let prompts = correct.len();
    let (mut picked, mut random, mut oracle) = (0.0, 0.0, 0.0);
    for (correct, rewards) in correct.iter().zip(rewards) {
        let n = correct.len() as f64;
        let top = rewards.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let tied: Vec<f64> = correct
            .iter()
            .zip(rewards)
            .filter(|(_, &r)| r == top)
            .map(|(&c, _)| c)
            .collect();
        picked += tied.iter().sum::<f64>() / tied.len().max(1) as f64;
        random += correct.iter().sum::<f64>() / n;
        oracle += f64::from(u8::from(correct.iter().any(|&c| c > 0.0)));
    }
    let share = |x: f64| x / prompts.max(1) as f64;
    BestOfN {
        prompts,
        n: correct.first().map_or(0, Vec::len),
        reward_model: share(picked),
        random: share(random),
        oracle: share(oracle),
    }
}

/// Best-of-n of `reward_model` on answers sampled from `policy` for `prompts`.
pub fn best_of_n<B: Backend>(
    reward_model: &RewardModel<B>,
    policy: &CausalLm<B>,
    prompts: &[EvalPrompt],
    tokenizer: &Tokenizer,
    settings: &SampleSettings,
    device: &B::Device,
) -> Result<BestOfN> {
    let answers = sample_answers(policy, prompts, tokenizer, settings, device)?;
    let correct = checker_scores(prompts, &answers)?;
    let rewards = reward_model_scores(reward_model, prompts, &answers, tokenizer, device)?;
    Ok(best_of_n_rates(&correct, &rewards))
}

/// The policy of best-of-n (a full folder, or a PEFT adapter merged onto its base), checked
/// to share the reward model's vocabulary.
pub fn load_policy<B: Backend>(
    dir: &Path,
    vocab_size: usize,
    device: &B::Device,
) -> Result<CausalLm<B>> {
    let options = LoadOptions::default();
    load_for_role(
        dir,
        "--policy",
        vocab_size,
        |folder| folder.load_causal_lm::<B>(&options, device),
        |adapter| {
            let (base, model) = load_adapted_causal_lm::<B>(adapter, &options, device)?;
            Ok((base, model.merge_lora()))
        },
    )
}
