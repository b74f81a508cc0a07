//! Reads of tensors back to the host (each one synchronises the device).

use burn::tensor::{backend::Backend, Tensor};

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
