//! The DPO trainer's settings (`dpo_trainer --help`).

use clap::Args;
use serde::{Deserialize, Serialize};

use super::config::CommonConfig;
use super::policy_pairs::PolicyPairsArgs;
use crate::methods::{DpoLoss, DpoMethod, DpoObjective, MethodSettings};

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
