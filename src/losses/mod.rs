//! Preference losses: Bradley-Terry with margins for reward models, token-weighted DPO for
//! policies. Both are scalar burn tensors ready for `backward()`, with the metrics trainers log.

mod bt;
mod dpo;

pub use bt::{bt_margin_loss, BtLoss, BtLossConfig};
pub use dpo::{weighted_dpo_loss, DpoInputs, DpoLoss, DpoLossConfig, DpoLossType, ReferenceLogps};
