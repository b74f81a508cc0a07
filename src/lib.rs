//! # otpref
//!
//! Optimal-transport preference losses for training language models with
//! [burn](https://burn.dev): batched log-domain Sinkhorn (balanced and unbalanced, padded,
//! differentiable three ways) as the foundation for OTPO token weights and APLOT margins.
//!
//! Every public function is generic over the burn backend; gradients need an autodiff backend
//! (`Autodiff<B>`). See `docs/` in the repository for the mathematics and conventions.
#![deny(missing_docs)]

mod error;
pub mod sinkhorn;

pub use error::OtprefError;
pub use sinkhorn::{
    sinkhorn, unbalanced_sinkhorn, GradientMode, OtBackend, SinkhornConfig, Transport,
    UnbalancedConfig,
};

/// The README's examples run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
