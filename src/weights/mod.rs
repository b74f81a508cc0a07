//! Token weights for DPO-style losses: one type ([`TokenWeights`]) and one entry point
//! ([`token_weights`]) for every scheme, so a trainer switches method with one value.
//!
//! | scheme | weight of a valid token | source |
//! | --- | --- | --- |
//! | `Dpo` | 1 | Rafailov et al. 2023 |
//! | `SimPo` | 1/&#124;y&#124; | Meng et al. 2024 |
//! | `SamPo` | 1 on a seeded random subset of m = min(&#124;y_c&#124;, &#124;y_r&#124;) tokens | Lu et al. 2024 |
//! | `LdDpo` | 1 on the first m tokens, α after | Liu et al. 2024 |
//! | `Otpo` | unbalanced-OT marginals, total τ | Li et al. 2025 (OTPO), Eq. 9–12 |
//! | `Uniform` | τ/&#124;y&#124; (OTPO ablation) | OTPO Table 3 |
//! | `Similarity` | softmax of cosine to the other response's mean, total τ (OTPO ablation) | OTPO Table 3 |
//! | `ConfPo` | 1 (or 1/&#124;S&#124;) on the tokens S whose policy probability is below the response's mean | Yoon et al. 2025 (ConfPO) |
//! | `Given` | the caller's w_i (finite, ≥ 0) | your own: a critic's or a process reward model's per-token credit |
//!
//! Padded and prompt positions (mask 0) always get weight exactly 0.

mod confpo;
mod given;
mod otpo;
#[cfg(feature = "fused-cpu")]
mod otpo_host_cost;
mod schemes;

use burn::config::Config;
use burn::tensor::{backend::Backend, Tensor};

use crate::sinkhorn::Convergence;

pub use otpo::{otpo_token_weights, CostNormalization, OtpoConfig};
pub use schemes::token_weights;

/// Weights of the response tokens of a batch of preference pairs.
#[derive(Debug, Clone)]
pub struct TokenWeights<B: Backend> {
    /// Weights of the chosen responses' tokens `[batch, len_c]`.
    pub chosen: Tensor<B, 2>,
    /// Weights of the rejected responses' tokens `[batch, len_r]`.
    pub rejected: Tensor<B, 2>,
    /// How the OT solves ended, for the schemes that solve one (`Otpo`); `None` otherwise.
    /// Check [`Convergence::all_converged`] to see whether `max_iters` was enough.
    pub convergence: Option<Convergence>,
}

impl<B: Backend> TokenWeights<B> {
    /// Plain DPO's weights: every response token weighs 1, prompt and padding 0, i.e. the
    /// masks themselves (`[batch, len_c]`, `[batch, len_r]`). The same as
    /// [`token_weights`] with [`TokenWeighting::Dpo`], without building a [`ResponseTokens`].
    pub fn from_masks(chosen_mask: Tensor<B, 2>, rejected_mask: Tensor<B, 2>) -> Self {
        TokenWeights {
            chosen: chosen_mask,
            rejected: rejected_mask,
            convergence: None,
        }
    }

    /// The weights cast to `dtype` (after an f32 computation for half-precision inputs).
    pub(crate) fn in_dtype(self, dtype: burn::tensor::DType) -> Self {
        TokenWeights {
            chosen: crate::precision::narrowed(self.chosen, dtype),
            rejected: crate::precision::narrowed(self.rejected, dtype),
            convergence: self.convergence,
        }
    }
}

/// The total weight τ given to each response (OTPO's budget; paper Table 3 ablations).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum WeightBudget {
    /// τ = min(|y_c|, |y_r|), the same for both responses (OTPO's default).
    Min,
    /// τ = (|y_c| + |y_r|) / 2.
    Mean,
    /// τ = max(|y_c|, |y_r|).
    Max,
    /// Each response keeps its own length: τ_c = |y_c|, τ_r = |y_r|.
    OwnLength,
    /// No rescaling: OTPO returns the plan's raw marginals, `Uniform` gives 1 per token and
    /// `Similarity` the softmax probabilities (total 1).
    None,
}

impl WeightBudget {
    /// The budgets `(τ_c, τ_r)` of one pair, `None` when there is no rescaling.
    pub(crate) fn totals(&self, len_c: usize, len_r: usize) -> Option<(f64, f64)> {
        let (c, r) = (len_c as f64, len_r as f64);
        match self {
            WeightBudget::Min => Some((c.min(r), c.min(r))),
            WeightBudget::Mean => Some(((c + r) / 2.0, (c + r) / 2.0)),
            WeightBudget::Max => Some((c.max(r), c.max(r))),
            WeightBudget::OwnLength => Some((c, r)),
            WeightBudget::None => None,
        }
    }
}

/// Which token-weighting scheme to use; see the module table.
#[derive(Debug, Clone)]
pub enum TokenWeighting {
    /// Every response token weighs 1 (standard DPO).
    Dpo,
    /// Length-normalised: 1/|y| (SimPO's average log-probability). These are only the
    /// weights: SimPO itself also uses [`DpoLossType::SimPo`](crate::DpoLossType::SimPo) and
    /// no reference; with a reference and another loss they give a length-normalised DPO.
    SimPo,
    /// A uniformly random subset of m = min(|y_c|, |y_r|) tokens of each response weighs 1,
    /// the rest 0. Pair `k` of a batch draws from `seed + k`: vary the seed per step.
    SamPo {
        /// Seed of the subset draw.
        seed: u64,
    },
    /// The first m = min(|y_c|, |y_r|) tokens weigh 1, the ones after weigh α ∈ [0, 1].
    LdDpo {
        /// Weight of the tokens past the shared length.
        alpha: f64,
    },
    /// OTPO's unbalanced-OT weights (needs hidden states).
    Otpo(OtpoConfig),
    /// Each response's tokens share its budget equally (OTPO ablation).
    Uniform {
        /// Total weight per response.
        budget: WeightBudget,
    },
    /// Softmax over a response of the cosine between each token's hidden state and the mean
    /// hidden state of the other response, scaled to the budget (OTPO ablation; needs hidden
    /// states).
    Similarity {
        /// Total weight per response.
        budget: WeightBudget,
    },
    /// ConfPO: only the tokens whose policy probability lies below the response's mean
    /// probability (its low-confidence, "critical" tokens) weigh, 1 each or 1/|S| (needs the
    /// policy's log-probabilities). A pair where either response has no such token weighs 0.
    /// The released recipe is the normalised form with SimPO's loss and no reference.
    ConfPo {
        /// Divide by the number of critical tokens (SimPO's average over them).
        length_normalized: bool,
    },
    /// The caller's own per-token weights, [`ResponseTokens::chosen_weights`] and
    /// [`ResponseTokens::rejected_weights`] (finite and non-negative on response tokens; prompt
    /// and padding positions get 0 whatever they hold). Differentiable when those tensors are
    /// tracked.
    Given,
}

/// The response tokens of a batch of pairs: validity masks and, for the schemes that need
/// them, hidden states (`Otpo`, `Similarity`), the policy's log-probabilities (`ConfPo`) or the
/// caller's weights (`Given`).
#[derive(Debug, Clone)]
pub struct ResponseTokens<B: Backend> {
    /// 1 on chosen response tokens, 0 on prompt and padding `[batch, len_c]`.
    pub chosen_mask: Tensor<B, 2>,
    /// 1 on rejected response tokens `[batch, len_r]`.
    pub rejected_mask: Tensor<B, 2>,
    /// Hidden states of the chosen responses `[batch, len_c, hidden]`: for token t, the state
    /// at the position that predicts it (shifted by one, as the log-probabilities are).
    pub chosen_hidden: Option<Tensor<B, 3>>,
    /// Hidden states of the rejected responses `[batch, len_r, hidden]`.
    pub rejected_hidden: Option<Tensor<B, 3>>,
    /// The policy's log-probability of each chosen response token `[batch, len_c]` (read as
    /// a constant: the weights do not differentiate through it).
    pub chosen_logps: Option<Tensor<B, 2>>,
    /// The policy's log-probability of each rejected response token `[batch, len_r]`.
    pub rejected_logps: Option<Tensor<B, 2>>,
    /// The caller's weight of each chosen response token `[batch, len_c]`
    /// ([`TokenWeighting::Given`]).
    pub chosen_weights: Option<Tensor<B, 2>>,
    /// The caller's weight of each rejected response token `[batch, len_r]`.
    pub rejected_weights: Option<Tensor<B, 2>>,
}

impl<B: Backend> ResponseTokens<B> {
    /// Masks only (enough for every scheme but `Otpo`, `Similarity` and `ConfPo`).
    pub fn from_masks(chosen_mask: Tensor<B, 2>, rejected_mask: Tensor<B, 2>) -> Self {
        ResponseTokens {
            chosen_mask,
            rejected_mask,
            chosen_hidden: None,
            rejected_hidden: None,
            chosen_logps: None,
            rejected_logps: None,
            chosen_weights: None,
            rejected_weights: None,
        }
    }

    /// These tokens with the caller's own weights, for [`TokenWeighting::Given`].
    pub fn with_weights(self, chosen: Tensor<B, 2>, rejected: Tensor<B, 2>) -> Self {
        ResponseTokens {
            chosen_weights: Some(chosen),
            rejected_weights: Some(rejected),
            ..self
        }
    }
}
