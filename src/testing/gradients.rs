//! Gradients checked against central finite differences, for any scalar function of a tensor.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};

use super::invariants::{check_finite, unravel, Violation};
use super::problems::host_values;

/// Checks the gradient autodiff gives for `f` (a scalar, shape `[1]`) at `x` against central
/// differences `(f(x + h eᵢ) − f(x − h eᵢ)) / 2h` with `h = step`, entry by entry: each must
/// agree to `tolerance · max(1, |difference|)`. The gradient must also be finite and reach
/// `x` at all. `x` is taken in its own dtype; in f32, a `step` near 1e-2 and a `tolerance`
/// near 1e-2 suit smooth functions of values of order one.
///
/// It evaluates `f` twice per entry of `x`: keep `x` small.
pub fn check_gradient<B, const D: usize>(
    f: impl Fn(Tensor<B, D>) -> Tensor<B, 1>,
    x: Tensor<B::InnerBackend, D>,
    step: f64,
    tolerance: f64,
) -> Result<(), Violation>
where
    B: AutodiffBackend,
{
    let tracked = Tensor::<B, D>::from_inner(x.clone()).require_grad();
    let grads = f(tracked.clone()).backward();
    let Some(gradient) = tracked.grad(&grads) else {
        return Err(Violation {
            invariant: "a gradient reaches the input",
            location: "x".into(),
            found: "no gradient (is the input used, and not detached?)".into(),
            size: f64::INFINITY,
            tolerance,
        });
    };
    check_finite("gradient", gradient.clone())?;
    let analytic = host_values(gradient);
    let (dims, dtype, device) = (x.dims(), x.dtype(), x.device());
    let point = host_values(x);
    let value_at = |values: Vec<f64>| -> f64 {
        let data = TensorData::new(values, dims).convert_dtype(dtype);
        let input = Tensor::<B::InnerBackend, D>::from_data(data, (&device, dtype));
        host_values(f(Tensor::from_inner(input)))[0]
    };
    for (entry, autodiff) in analytic.iter().enumerate() {
        let mut plus = point.clone();
        plus[entry] += step;
        let mut minus = point.clone();
        minus[entry] -= step;
        let difference = (value_at(plus) - value_at(minus)) / (2.0 * step);
        let size = (autodiff - difference).abs() / difference.abs().max(1.0);
        if size > tolerance || size.is_nan() {
            return Err(Violation {
                invariant: "the gradient matches finite differences",
                location: format!("x[{}]", unravel(entry, &dims)),
                found: format!("autodiff {autodiff:.6}, central difference {difference:.6}"),
                size,
                tolerance,
            });
        }
    }
    Ok(())
}
