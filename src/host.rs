//! Reads of tensors back to the host (each one synchronises the device).

use burn::tensor::{backend::Backend, Tensor, TensorData};

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

/// A `[rows, len]` tensor's rows on the host, as f64.
pub(crate) fn host_rows<B: Backend>(tensor: &Tensor<B, 2>, len: usize) -> Vec<Vec<f64>> {
    to_host(tensor.clone())
        .chunks(len.max(1))
        .map(|row| row.to_vec())
        .collect()
}

/// `values` (row-major) as a tensor of `like`'s shape, dtype and device.
pub(crate) fn like<B: Backend>(like: &Tensor<B, 2>, values: Vec<f64>) -> Tensor<B, 2> {
    let dtype = like.dtype();
    Tensor::from_data(
        TensorData::new(values, like.dims()).convert_dtype(dtype),
        (&like.device(), dtype),
    )
}
