//! The row and column reductions the solver is made of, composed from burn's tensor ops: the
//! default of [`OtBackend::reduce_lines`], and the reference the one-kernel versions (`cube/`)
//! are tested against.
//!
//! [`OtBackend::reduce_lines`]: crate::OtBackend::reduce_lines

use burn::tensor::{backend::Backend, Tensor};

use crate::error::OtprefError;

/// Which lines of a `[batch, n, m]` matrix a reduction runs along: one result per row
/// (weights `[batch, m]`, result `[batch, n]`) or per column (weights `[batch, n]`, result
/// `[batch, m]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// One result per row `i`, reducing over the columns `j`.
    Rows,
    /// One result per column `j`, reducing over the rows `i`.
    Columns,
}

/// What a reduction computes from each line of the matrix `M` and the weights `w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// `log Σ exp(M + w)`: the log-sum-exp of every Sinkhorn update.
    LogSumExp,
    /// `Σ M w`: the batched matrix-vector products of the implicit backward.
    WeightedSum,
}

/// The error for `weights` that do not fit `matrix` along `axis`, or a dtype that differs;
/// `Ok` when they fit.
pub(crate) fn check_operands<B: Backend>(
    matrix: &Tensor<B, 3>,
    weights: &Tensor<B, 2>,
    axis: Axis,
) -> Result<(), OtprefError> {
    let [batch, n, m] = matrix.dims();
    let expected = match axis {
        Axis::Rows => [batch, m],
        Axis::Columns => [batch, n],
    };
    if weights.dims() != expected {
        return Err(OtprefError::Shape(format!(
            "weights of shape {:?} for a reduction along {axis:?} of a matrix of shape \
             {:?}: they must be [batch, {}] = {expected:?}",
            weights.dims(),
            [batch, n, m],
            if axis == Axis::Rows { "m" } else { "n" },
        )));
    }
    if weights.dtype() != matrix.dtype() {
        return Err(OtprefError::DTypeMismatch(format!(
            "matrix is {:?} but weights are {:?}; cast one to the other's dtype",
            matrix.dtype(),
            weights.dtype()
        )));
    }
    Ok(())
}

/// The reduction composed from burn's tensor ops.
pub(crate) fn composed<B: Backend>(
    matrix: Tensor<B, 3>,
    weights: Tensor<B, 2>,
    axis: Axis,
    reduction: Reduction,
) -> Tensor<B, 2> {
    match reduction {
        Reduction::LogSumExp => log_sum_exp_with(matrix, weights, axis),
        Reduction::WeightedSum => weighted_sum_with(matrix, weights, axis),
    }
}

/// `log Σ_j exp(M_pij + w_pj)` per row or `log Σ_i exp(M_pij + w_pi)` per column.
fn log_sum_exp_with<B: Backend>(
    matrix: Tensor<B, 3>,
    weights: Tensor<B, 2>,
    axis: Axis,
) -> Tensor<B, 2> {
    let [_, n, m] = matrix.dims();
    match axis {
        Axis::Rows => log_sum_exp(matrix + spread_over_rows(weights, n), 2).squeeze_dim(2),
        Axis::Columns => log_sum_exp(matrix + spread_over_columns(weights, m), 1).squeeze_dim(1),
    }
}

/// `Σ_j M_pij w_pj` per row or `Σ_i M_pij w_pi` per column: batched matrix-vector products.
fn weighted_sum_with<B: Backend>(
    matrix: Tensor<B, 3>,
    weights: Tensor<B, 2>,
    axis: Axis,
) -> Tensor<B, 2> {
    match axis {
        Axis::Rows => matrix.matmul(weights.unsqueeze_dim(2)).squeeze_dim(2),
        Axis::Columns => weights.unsqueeze_dim(1).matmul(matrix).squeeze_dim(1),
    }
}

/// Numerically stable `log Σ exp` along `dim`, keeping the dimension.
///
/// The shift is detached: it cancels exactly, and a detached shift keeps ties in the max out
/// of the backward pass.
pub(crate) fn log_sum_exp<B: Backend>(scores: Tensor<B, 3>, dim: usize) -> Tensor<B, 3> {
    let len = scores.dims()[dim];
    let shift = scores.clone().detach().max_dim(dim);
    let lse = (scores - shift.clone().repeat_dim(dim, len))
        .exp()
        .sum_dim(dim)
        .log();
    lse + shift
}

/// `[batch, m]` -> `[batch, n, m]`, the same row for every `i`.
///
/// A materialised repeat: same-shape arithmetic on it is much faster than implicit broadcasting
/// on CPU backends, and the same on GPUs.
pub(crate) fn spread_over_rows<B: Backend>(values: Tensor<B, 2>, n: usize) -> Tensor<B, 3> {
    values.unsqueeze_dim::<3>(1).repeat_dim(1, n)
}

/// `[batch, n]` -> `[batch, n, m]`, the same column for every `j`.
pub(crate) fn spread_over_columns<B: Backend>(values: Tensor<B, 2>, m: usize) -> Tensor<B, 3> {
    values.unsqueeze_dim::<3>(2).repeat_dim(2, m)
}
