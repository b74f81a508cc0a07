//! Input checks shared by the weighting schemes and the losses.

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::error::OtprefError;

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

/// The largest finite value of a float dtype (f32's for the others: bf16 and flex32 share its
/// range).
pub(crate) fn dtype_max(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::MAX,
        DType::F16 => 65504.0,
        _ => f64::from(f32::MAX),
    }
}

/// `tensor` in f32 when it is f16 or bf16, unchanged otherwise: distances, OT and losses are
/// computed with f32 accumulation (and range) whatever the inputs' precision.
pub(crate) fn widened<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Tensor<B, D> {
    narrowed(tensor.clone(), widened_dtype(tensor.dtype()))
}

/// The dtype [`widened`] computes in for inputs of `dtype`.
pub(crate) fn widened_dtype(dtype: DType) -> DType {
    match dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    }
}

/// `tensor` cast to `dtype` (results of a widened computation back in the inputs' dtype); no
/// cast when it already has it.
pub(crate) fn narrowed<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
    dtype: DType,
) -> Tensor<B, D> {
    match tensor.dtype() == dtype {
        true => tensor,
        false => tensor.cast(dtype),
    }
}

/// True when no entry of `tensor` is NaN or infinite.
///
/// Fast path: NaN and infinities propagate through a sum, so a finite sum proves every entry
/// finite in one pass; only a non-finite sum (which may also be an overflow) pays for the
/// exact element-wise scan.
pub(crate) fn all_finite<B: Backend, const D: usize>(tensor: &Tensor<B, D>) -> bool {
    let tensor = tensor.clone().detach();
    let sum = tensor.clone().sum().into_data().convert::<f64>();
    if sum.iter::<f64>().all(f64::is_finite) {
        return true;
    }
    tensor
        .is_finite()
        .all()
        .into_data()
        .iter::<bool>()
        .all(|ok| ok)
}

/// A float tensor's values on the host, as f64, in row-major order.
pub(crate) fn to_host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Vec<f64> {
    tensor
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .expect("a float tensor converts to f64")
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
