//! Working precision: f16/bf16 inputs computed in f32 and the results cast back, and each
//! float dtype's range.

use burn::tensor::{backend::Backend, DType, Tensor};

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
