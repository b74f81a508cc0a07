//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong when calling otpref with bad input.
///
/// Each message says what was wrong and how to fix it. otpref never panics on user input and
/// never returns a silent NaN instead of one of these errors.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum OtprefError {
    /// Tensors whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A mass (marginal weight) that is negative, NaN or infinite.
    #[error("invalid mass: {0}")]
    InvalidMass(String),
    /// A token mask holding something other than 0 and 1.
    #[error("invalid mask: {0}")]
    InvalidMask(String),
    /// A problem (or response) in the batch with no valid entry at all.
    #[error("empty problem: {0}")]
    Empty(String),
    /// Balanced transport between masses whose totals differ.
    #[error("unequal totals: {0}")]
    UnequalTotals(String),
    /// A configuration value out of its allowed range (ε <= 0, ρ <= 0, ...).
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// NaN or infinity where finite numbers are required.
    #[error("non-finite input: {0}")]
    NonFinite(String),
    /// Float inputs of one call in different dtypes (an f64 cost with f32 masses, ...).
    #[error("dtype mismatch: {0}")]
    DTypeMismatch(String),
    /// A dtype the function cannot compute in faithfully, or whose range its results exceed
    /// (an OT solution beyond f16's largest value).
    #[error("unsupported dtype: {0}")]
    UnsupportedDType(String),
}
