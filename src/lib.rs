//! # otpref
//!
//! Optimal-transport preference losses for training language models with
//! [burn](https://burn.dev): batched log-domain Sinkhorn (balanced and unbalanced, padded,
//! differentiable three ways) as the foundation for OTPO token weights and APLOT margins.
//!
//! Data flows one way: cost → transport ([`sinkhorn`](mod@sinkhorn)) → weights or margins
//! ([`weights`], [`aplot`]) → loss ([`losses`]).
//!
//! Every public function is generic over the burn backend; gradients need an autodiff backend
//! (`Autodiff<B>`). See `docs/` in the repository for the mathematics and conventions.
#![deny(missing_docs)]
// docs.rs (nightly, `--cfg docsrs`) labels each backend impl with the feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod aplot;
mod checks;
mod error;
mod host;
pub mod losses;
mod penalty_serde;
mod precision;
pub mod sinkhorn;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
pub mod weights;

pub use aplot::{aplot_margins, AplotConfig};
pub use error::OtprefError;
pub use losses::{
    bt_margin_loss, weighted_dpo_loss, BtLoss, BtLossConfig, DpoInputs, DpoLoss, DpoLossConfig,
    DpoLossType, ReferenceLogps,
};
pub use sinkhorn::{
    sinkhorn, unbalanced_sinkhorn, Axis, Convergence, GradientMode, OtBackend, Reduction,
    SinkhornConfig, Transport, UnbalancedConfig,
};
pub use weights::{
    otpo_token_weights, token_weights, CostNormalization, OtpoConfig, ResponseTokens,
    TokenWeighting, TokenWeights, WeightBudget,
};

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The method guides' snippets run as doctests.
#[cfg(doctest)]
mod guide_doctests {
    #[doc = include_str!("../docs/otpo.md")]
    struct Otpo;
    #[doc = include_str!("../docs/dpo_loss.md")]
    struct DpoLoss;
    #[doc = include_str!("../docs/aplot.md")]
    struct Aplot;
}
