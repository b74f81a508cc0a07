//! Input checks shared by the solvers, the weighting schemes and the losses: each returns an
//! error naming the input (dtype casts are in `precision`, host reads in `host`).

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::error::OtprefError;
use crate::host::{all_finite, to_host};

/// Errors unless `tensor` has exactly `expected` as its shape.
pub(crate) fn shape<B: Backend, const D: usize>(
    name: &str,
    tensor: &Tensor<B, D>,
    expected: [usize; D],
) -> Result<(), OtprefError> {
    if tensor.dims() != expected {
        return Err(OtprefError::Shape(format!(
            "{name} must have shape {expected:?}, got {:?}",
            tensor.dims()
        )));
    }
    Ok(())
}

/// Errors unless every named float input has the same dtype: the backends panic on
/// arithmetic between dtypes, so a mix must be refused before any of it.
pub(crate) fn same_dtype(inputs: &[(&str, DType)]) -> Result<(), OtprefError> {
    let Some(&(first_name, first)) = inputs.first() else {
        return Ok(());
    };
    match inputs.iter().find(|(_, dtype)| *dtype != first) {
        Some((name, dtype)) => Err(OtprefError::DTypeMismatch(format!(
            "{name} is {dtype:?} but {first_name} is {first:?}; pass every float input of one \
             call in one dtype (for example `{name}.cast({first:?})`)"
        ))),
        None => Ok(()),
    }
}

/// The solver settings a wrapper config (OTPO's, APLOT's) exposes, checked under the names the
/// user set them by, before the inner solver (whose field names differ) sees them.
pub(crate) fn solver_settings(
    config: &str,
    epsilon: f64,
    max_iters: usize,
    tolerance: f64,
) -> Result<(), OtprefError> {
    if !(epsilon.is_finite() && epsilon > 0.0) {
        return Err(OtprefError::InvalidParameter(format!(
            "{config}::epsilon must be a finite number > 0, got {epsilon}"
        )));
    }
    if max_iters == 0 {
        return Err(OtprefError::InvalidParameter(format!(
            "{config}::max_iters must be >= 1, got 0"
        )));
    }
    if !(tolerance.is_finite() && tolerance >= 0.0) {
        return Err(OtprefError::InvalidParameter(format!(
            "{config}::tolerance must be a finite number >= 0, got {tolerance}"
        )));
    }
    Ok(())
}

/// Errors if `tensor` holds NaN or an infinity (one device synchronisation).
pub(crate) fn finite<B: Backend, const D: usize>(
    name: &str,
    tensor: &Tensor<B, D>,
) -> Result<(), OtprefError> {
    if !all_finite(tensor) {
        return Err(OtprefError::NonFinite(format!(
            "{name} holds NaN or infinite values; check the model outputs feeding it"
        )));
    }
    Ok(())
}

/// Number of valid (non-zero) entries in each row of a 0/1 mask `[batch, len]`, erroring on a
/// row without any: an empty response has no tokens to weight.
pub(crate) fn lengths<B: Backend>(
    name: &str,
    mask: &Tensor<B, 2>,
) -> Result<Vec<usize>, OtprefError> {
    let [batch, len] = mask.dims();
    if batch == 0 {
        return Err(OtprefError::Empty(format!(
            "{name} has shape [0, {len}]: the batch is empty"
        )));
    }
    if len == 0 {
        return Err(OtprefError::Empty(format!(
            "{name} has shape [{batch}, 0]: no token positions, so no response has a token to \
             weight"
        )));
    }
    let values = to_host(mask.clone());
    if let Some(bad) = values.iter().position(|v| *v != 0.0 && *v != 1.0) {
        return Err(OtprefError::InvalidMask(format!(
            "{name}[{}, {}] = {}; a mask holds 1 on response tokens and 0 elsewhere",
            bad / len,
            bad % len,
            values[bad]
        )));
    }
    let counts: Vec<usize> = values
        .chunks(len)
        .map(|row| row.iter().filter(|v| **v == 1.0).count())
        .collect();
    if let Some(empty) = counts.iter().position(|c| *c == 0) {
        return Err(OtprefError::Empty(format!(
            "{name} row {empty} has no valid token: an empty response cannot be weighted; \
             drop that pair from the batch"
        )));
    }
    Ok(counts)
}
