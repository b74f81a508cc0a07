//! The reward trainer's settings (`reward_trainer --help`).

use clap::Args;
use otpref::AplotConfig;
use serde::{Deserialize, Serialize};

use super::best_of_n::BestOfNArgs;
use super::config::CommonConfig;
use crate::methods::{RewardLoss, RewardObjective};
use crate::training::Replica;

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
    pub(super) fn aplot(&self) -> AplotConfig {
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
