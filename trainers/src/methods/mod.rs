//! The preference methods' loss assembly (as flags select them): SFT, the DPO family, the
//! reward model. The training loop (`crate::training`) and the programs (`crate::run`) call in.

mod dpo;
mod dpo_step;
mod reference;
mod reward;
mod sft;

pub use dpo::{DpoLoss, DpoMethod, MethodSettings};
pub use dpo_step::{dpo_loss, pair_weights, weighted_loss, DpoObjective, StepOutcome};
pub use reference::{precomputed_tensor, reference_logps, ReferenceLogps};
pub use reward::{reward_loss, RewardLoss, RewardObjective, RewardOutcome};
pub use sft::{chosen_nll, response_nll, sft_loss};
