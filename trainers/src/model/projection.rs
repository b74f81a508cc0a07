//! The linear projection `x · W + b` as one 2-D matrix product over all positions.
//!
//! burn's `linear` on a `[batch, len, d]` input multiplies batch row by batch row, and its
//! backward then forms a weight-sized gradient per batch row and sums them: for the output
//! head of a 49k vocabulary at batch 8 that is 0.9 GB of fresh memory and a reduction on every
//! step. Flattening the leading dimensions first gives the same values from one product, and
//! one product for each gradient.

use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `x · weight (+ bias)` over the last dimension of `x` (`[..., d_in]`, `weight`
/// `[d_in, d_out]` in burn's layout), computed with the leading dimensions as one.
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    if D <= 2 {
        return burn::tensor::module::linear(x, weight, bias);
    }
    let mut dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product();
    let out = burn::tensor::module::linear(x.reshape([rows, d_in]), weight, bias);
    dims[D - 1] = d_out;
    out.reshape(dims)
}

/// [`linear`] with a burn `Linear` module's parameters.
pub fn forward<B: Backend, const D: usize>(module: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    linear(
        x,
        module.weight.val(),
        module.bias.as_ref().map(|b| b.val()),
    )
}
