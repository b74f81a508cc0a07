//! The CubeCL kernels: one pass over a `[batch, n, m]` matrix `M` that reduces every row (or
//! every column) against a weight vector, as a log-sum-exp `log Σ exp(M + w)` (the Sinkhorn
//! updates and marginals) or as a weighted sum `Σ M w` (the implicit backward's
//! plan-vector products).
//!
//! Both kernels run cubes of [`LANES`] × [`GROUPS`] units and read `M` coalesced: consecutive
//! units of a group read consecutive entries of a row. Each unit folds its share of a line
//! into a running `(top, sum)` pair, then the pairs of a line are combined in shared memory.
//! The log-sum-exp is taken online (`sum` of `exp(v - top)`, rescaled when `top` grows), so
//! `M` is read once, and it is exact for any range of values.

use burn_cubecl::cubecl;
use cubecl::prelude::*;

/// Units of a cube along its first dimension: consecutive entries of a line.
pub(super) const LANES: u32 = 32;
/// Units of a cube along its second dimension: rows per cube (row kernel) or slices of the
/// rows (column kernel).
pub(super) const GROUPS: u32 = 8;
const CUBE_SIZE: usize = (LANES * GROUPS) as usize;
/// A running maximum below any value a reduction sees (finite: `exp(LOWEST - LOWEST)` is 1,
/// where an infinite start would give NaN when two empty partial results meet).
const LOWEST: f32 = -3.0e38;

/// One result per row: `out[p, i] = reduce_j(M[p, i, j], w[p, j])`. A cube holds [`GROUPS`]
/// rows of one problem (`CUBE_POS_Y`); the [`LANES`] units of a row stride along it.
#[cube(launch)]
pub(super) fn reduce_rows<F: Float>(
    matrix: &Tensor<F>,
    weights: &Tensor<F>,
    output: &mut Tensor<F>,
    #[comptime] log_sum_exp: bool,
    #[define(F)] _dtype: StorageType,
) {
    let n = matrix.shape(1);
    let m = matrix.shape(2);
    let problem = CUBE_POS_Y as usize;
    let lane = UNIT_POS_X as usize;
    let row = CUBE_POS_X as usize * GROUPS as usize + UNIT_POS_Y as usize;

    let mut top = F::new(LOWEST);
    let mut sum = F::new(0.0);
    if row < n {
        let line = (problem * n + row) * m;
        let weight_line = problem * m;
        let mut j = lane;
        while j < m {
            let (t, s) = accumulate::<F>(
                top,
                sum,
                matrix[line + j],
                weights[weight_line + j],
                log_sum_exp,
            );
            top = t;
            sum = s;
            j += LANES as usize;
        }
    }

    let mut tops = SharedMemory::<F>::new(CUBE_SIZE);
    let mut sums = SharedMemory::<F>::new(CUBE_SIZE);
    let slot = UNIT_POS_Y as usize * LANES as usize + lane;
    tops[slot] = top;
    sums[slot] = sum;
    sync_cube();
    // Halve the live lanes of each row until lane 0 holds the row's result.
    #[unroll]
    for level in 0..5u32 {
        let stride = (LANES >> (level + 1)) as usize;
        if lane < stride {
            let (t, s) = combine::<F>(
                tops[slot],
                sums[slot],
                tops[slot + stride],
                sums[slot + stride],
                log_sum_exp,
            );
            tops[slot] = t;
            sums[slot] = s;
        }
        sync_cube();
    }
    if lane == 0 && row < n {
        output[problem * n + row] = finish::<F>(tops[slot], sums[slot], log_sum_exp);
    }
}

/// One result per column: `out[p, j] = reduce_i(M[p, i, j], w[p, i])`. A cube holds
/// [`LANES`] consecutive columns of one problem; its [`GROUPS`] groups take every
/// `GROUPS`-th row each.
#[cube(launch)]
pub(super) fn reduce_columns<F: Float>(
    matrix: &Tensor<F>,
    weights: &Tensor<F>,
    output: &mut Tensor<F>,
    #[comptime] log_sum_exp: bool,
    #[define(F)] _dtype: StorageType,
) {
    let n = matrix.shape(1);
    let m = matrix.shape(2);
    let problem = CUBE_POS_Y as usize;
    let lane = UNIT_POS_X as usize;
    let group = UNIT_POS_Y as usize;
    let column = CUBE_POS_X as usize * LANES as usize + lane;

    let mut top = F::new(LOWEST);
    let mut sum = F::new(0.0);
    if column < m {
        let start = problem * n * m + column;
        let weight_line = problem * n;
        let mut i = group;
        while i < n {
            let (t, s) = accumulate::<F>(
                top,
                sum,
                matrix[start + i * m],
                weights[weight_line + i],
                log_sum_exp,
            );
            top = t;
            sum = s;
            i += GROUPS as usize;
        }
    }

    let mut tops = SharedMemory::<F>::new(CUBE_SIZE);
    let mut sums = SharedMemory::<F>::new(CUBE_SIZE);
    let slot = group * LANES as usize + lane;
    tops[slot] = top;
    sums[slot] = sum;
    sync_cube();
    // Halve the live groups until group 0 holds each column's result.
    #[unroll]
    for level in 0..3u32 {
        let stride = (GROUPS >> (level + 1)) as usize;
        if group < stride {
            let other = slot + stride * LANES as usize;
            let (t, s) = combine::<F>(
                tops[slot],
                sums[slot],
                tops[other],
                sums[other],
                log_sum_exp,
            );
            tops[slot] = t;
            sums[slot] = s;
        }
        sync_cube();
    }
    if group == 0 && column < m {
        output[problem * m + column] = finish::<F>(tops[slot], sums[slot], log_sum_exp);
    }
}

/// Folds one entry `value` with its weight into the running `(top, sum)`.
#[cube]
fn accumulate<F: Float>(
    top: F,
    sum: F,
    value: F,
    weight: F,
    #[comptime] log_sum_exp: bool,
) -> (F, F) {
    if log_sum_exp {
        let v = value + weight;
        // One exponential per entry: rescale the sum only when the maximum moves.
        if v > top {
            (v, sum * F::exp(top - v) + F::new(1.0))
        } else {
            (top, sum + F::exp(v - top))
        }
    } else {
        (top, sum + value * weight)
    }
}

/// Merges two partial results.
#[cube]
fn combine<F: Float>(
    top: F,
    sum: F,
    other_top: F,
    other_sum: F,
    #[comptime] log_sum_exp: bool,
) -> (F, F) {
    if log_sum_exp {
        let joint = F::max(top, other_top);
        (
            joint,
            sum * F::exp(top - joint) + other_sum * F::exp(other_top - joint),
        )
    } else {
        (top, sum + other_sum)
    }
}

#[cube]
fn finish<F: Float>(top: F, sum: F, #[comptime] log_sum_exp: bool) -> F {
    if log_sum_exp {
        top + F::ln(sum)
    } else {
        sum
    }
}
