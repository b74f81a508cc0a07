//! The DPO family, one flag each: which token weights and which loss shape a method uses.

use clap::ValueEnum;
use otpref::{DpoLossType, OtpoConfig, TokenWeighting, WeightBudget};
use serde::{Deserialize, Serialize};

/// A token-weighting method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpoMethod {
    /// Plain DPO: every response token weight 1.
    Dpo,
    /// OTPO: weights from unbalanced OT between the chosen and rejected tokens' hidden states.
    Otpo,
    /// SimPO: length-normalised, reference-free, with a target margin (--simpo-gamma).
    Simpo,
    /// SamPO: the longer response down-sampled to the shorter one's length.
    Sampo,
    /// LD-DPO: tokens past the shorter response's length weighted by --ld-alpha.
    LdDpo,
    /// OTPO's ablation: uniform weights with OTPO's budget.
    Uniform,
    /// OTPO's ablation: weights from hidden-state similarity without OT.
    Similarity,
    /// ConfPO as released: SimPO (reference-free, --simpo-gamma) over only the tokens whose
    /// policy probability is below the response's mean, averaged over them.
    Confpo,
    /// ConfPO on DPO: the reference and --loss over only the low-confidence tokens.
    ConfpoDpo,
    /// The data's own token weights (`chosen_weights`, `rejected_weights`: one per response
    /// token), with the reference and --loss.
    Given,
}

/// The loss shape (TRL's `loss_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DpoLoss {
    /// −log σ(βΔ) (with --label-smoothing: conservative DPO).
    Sigmoid,
    /// IPO's squared loss.
    Ipo,
    /// SLiC's hinge.
    Hinge,
    /// Robust DPO for noisy labels (uses --label-smoothing).
    Robust,
}

/// Everything a method needs besides β.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodSettings {
    /// SimPO's target margin γ.
    pub simpo_gamma: f64,
    /// LD-DPO's α.
    pub ld_alpha: f64,
    /// OTPO's entropic ε.
    pub otpo_epsilon: f64,
    /// OTPO's marginal relaxation.
    pub otpo_marginal_penalty: f64,
}

impl DpoMethod {
    /// The token weighting for optimizer step `step` (SamPO's sampling differs per step, and is
    /// replayed exactly on resume).
    pub fn weighting(self, settings: &MethodSettings, seed: u64, step: usize) -> TokenWeighting {
        let min = WeightBudget::Min;
        match self {
            DpoMethod::Dpo => TokenWeighting::Dpo,
            DpoMethod::Otpo => TokenWeighting::Otpo(
                OtpoConfig::new()
                    .with_epsilon(settings.otpo_epsilon)
                    .with_marginal_penalty(settings.otpo_marginal_penalty),
            ),
            DpoMethod::Simpo => TokenWeighting::SimPo,
            DpoMethod::Sampo => TokenWeighting::SamPo {
                seed: seed.wrapping_mul(0x9E37_79B9).wrapping_add(step as u64),
            },
            DpoMethod::LdDpo => TokenWeighting::LdDpo {
                alpha: settings.ld_alpha,
            },
            DpoMethod::Uniform => TokenWeighting::Uniform { budget: min },
            DpoMethod::Similarity => TokenWeighting::Similarity { budget: min },
            DpoMethod::Confpo => TokenWeighting::ConfPo {
                length_normalized: true,
            },
            DpoMethod::ConfpoDpo => TokenWeighting::ConfPo {
                length_normalized: false,
            },
            DpoMethod::Given => TokenWeighting::Given,
        }
    }

    /// The loss shape: SimPO has its own; the others take `loss`.
    pub fn loss_type(self, loss: DpoLoss, settings: &MethodSettings) -> DpoLossType {
        match (self, loss) {
            (DpoMethod::Simpo | DpoMethod::Confpo, _) => DpoLossType::SimPo {
                gamma: settings.simpo_gamma,
            },
            (_, DpoLoss::Sigmoid) => DpoLossType::Sigmoid,
            (_, DpoLoss::Ipo) => DpoLossType::Ipo,
            (_, DpoLoss::Hinge) => DpoLossType::Hinge,
            (_, DpoLoss::Robust) => DpoLossType::Robust,
        }
    }

    /// Whether the method reads the policy's hidden states.
    pub fn needs_hidden_states(self) -> bool {
        matches!(self, DpoMethod::Otpo | DpoMethod::Similarity)
    }

    /// Whether the method reads the policy's per-token log-probabilities (ConfPO's selection).
    pub fn needs_policy_logps(self) -> bool {
        matches!(self, DpoMethod::Confpo | DpoMethod::ConfpoDpo)
    }

    /// Whether the method reads the data's token weights.
    pub fn needs_given_weights(self) -> bool {
        self == DpoMethod::Given
    }

    /// Whether the method compares against a reference model.
    pub fn uses_reference(self) -> bool {
        !matches!(self, DpoMethod::Simpo | DpoMethod::Confpo)
    }
}
