//! The CubeCL kernels: one pass over a `[batch, n, m]` matrix `M` that reduces every row (or
//! every column) against a weight vector, as a log-sum-exp `log Σ exp(M + w)` (the Sinkhorn
//! updates and marginals) or as a weighted sum `Σ M w` (the implicit backward's
//! plan-vector products).
//!
//! Both kernels run cubes of [`LANES`] × [`GROUPS`] units and read `M` coalesced: consecutive
//! units of a group read consecutive entries of a row. Each unit folds its share of a line
//! into a running `(top, sum)` pair, then the pairs of a line are combined: a row's in plane
//! (warp) registers where the device allows, then in shared memory across the planes of a
//! row; a column's (whose units belong to different planes) in shared memory.
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
///
/// `plane_width` is the device's plane (warp) size where it divides [`LANES`] and the device
/// has plane operations, or 0: the units of a row then combine their partial results in
/// plane registers first (on a 32-wide plane, the whole row, with no shared memory and no
/// cube synchronisation), and in shared memory only across the planes of a row.
#[cube(launch)]
pub(super) fn reduce_rows<F: Float>(
    matrix: &Tensor<F>,
    weights: &Tensor<F>,
    output: &mut Tensor<F>,
    #[comptime] log_sum_exp: bool,
    #[comptime] plane_width: u32,
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
        let line = Line {
            start: (problem * n + row) * m,
            step: 1,
            weight_start: problem * m,
            len: m,
        };
        let (t, s) = fold_line::<F>(matrix, weights, line, lane, LANES as usize, log_sum_exp);
        top = t;
        sum = s;
    }

    let slot = UNIT_POS_Y as usize * LANES as usize + lane;
    let (top, sum) = if comptime!(plane_width == 0) {
        // Halve the live lanes of each row until lane 0 holds the row's result.
        combine_in_shared::<F>(top, sum, slot, lane, 1, LANES, log_sum_exp)
    } else {
        // Every unit of a plane gets the plane's result; the planes of a row (lanes
        // `0, plane_width, ...` hold their results) then meet in shared memory.
        let (top, sum) = combine_in_plane::<F>(top, sum, log_sum_exp);
        if comptime!(plane_width < LANES) {
            let planes = comptime!(LANES / plane_width);
            let width = plane_width as usize;
            combine_in_shared::<F>(top, sum, slot, lane / width, width, planes, log_sum_exp)
        } else {
            (top, sum)
        }
    };
    if lane == 0 && row < n {
        output[problem * n + row] = finish::<F>(top, sum, log_sum_exp);
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
        let line = Line {
            start: problem * n * m + column,
            step: m,
            weight_start: problem * n,
            len: n,
        };
        let (t, s) = fold_line::<F>(matrix, weights, line, group, GROUPS as usize, log_sum_exp);
        top = t;
        sum = s;
    }

    // Halve the live groups until group 0 holds each column's result.
    let slot = group * LANES as usize + lane;
    let spacing = LANES as usize;
    let (top, sum) = combine_in_shared::<F>(top, sum, slot, group, spacing, GROUPS, log_sum_exp);
    if group == 0 && column < m {
        output[problem * m + column] = finish::<F>(top, sum, log_sum_exp);
    }
}

/// Combines the `count` partial results `(top, sum)` of a line, held by the units at
/// `position` 0, 1, ... `count - 1` (`count` a power of two) whose cube slots are `spacing`
/// apart, by halving the live units in shared memory. The unit at position 0 gets the line's
/// result. Every unit of the cube must call it (it synchronises the cube).
#[cube]
fn combine_in_shared<F: Float>(
    top: F,
    sum: F,
    slot: usize,
    position: usize,
    spacing: usize,
    #[comptime] count: u32,
    #[comptime] log_sum_exp: bool,
) -> (F, F) {
    let mut tops = SharedMemory::<F>::new(CUBE_SIZE);
    let mut sums = SharedMemory::<F>::new(CUBE_SIZE);
    tops[slot] = top;
    sums[slot] = sum;
    sync_cube();
    #[unroll]
    for level in 0..count.trailing_zeros() {
        let stride = (count >> (level + 1)) as usize;
        if position < stride {
            let other = slot + stride * spacing;
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
    (tops[slot], sums[slot])
}

/// Combines the partial results `(top, sum)` of the units of a plane in its registers; every
/// unit gets the plane's result. Every unit of the plane must call it.
#[cube]
fn combine_in_plane<F: Float>(top: F, sum: F, #[comptime] log_sum_exp: bool) -> (F, F) {
    if log_sum_exp {
        let joint = plane_max(top);
        (joint, plane_sum(sum * F::exp(top - joint)))
    } else {
        (top, plane_sum(sum))
    }
}

/// One row or column of the matrix: entry `k` (`k < len`) is `matrix[start + k * step]`, its
/// weight `weights[weight_start + k]`.
#[derive(CubeType, Clone, Copy)]
struct Line {
    start: usize,
    step: usize,
    weight_start: usize,
    len: usize,
}

/// Folds the entries `first, first + stride, ...` of `line` into a running `(top, sum)`,
/// four per step: their loads are issued together, so that each unit keeps several reads in
/// flight (one at a time leaves a GPU's memory bus idle while it waits).
#[cube]
fn fold_line<F: Float>(
    matrix: &Tensor<F>,
    weights: &Tensor<F>,
    line: Line,
    first: usize,
    stride: usize,
    #[comptime] log_sum_exp: bool,
) -> (F, F) {
    let mut top = F::new(LOWEST);
    let mut sum = F::new(0.0);
    let mut k = first;
    while k + 3 * stride < line.len {
        let at = line.start + k * line.step;
        let jump = stride * line.step;
        let w = line.weight_start + k;
        let (v0, v1, v2, v3) = (
            matrix[at],
            matrix[at + jump],
            matrix[at + 2 * jump],
            matrix[at + 3 * jump],
        );
        let (w0, w1, w2, w3) = (
            weights[w],
            weights[w + stride],
            weights[w + 2 * stride],
            weights[w + 3 * stride],
        );
        let (t, s) = accumulate::<F>(top, sum, v0, w0, log_sum_exp);
        let (t, s) = accumulate::<F>(t, s, v1, w1, log_sum_exp);
        let (t, s) = accumulate::<F>(t, s, v2, w2, log_sum_exp);
        let (t, s) = accumulate::<F>(t, s, v3, w3, log_sum_exp);
        top = t;
        sum = s;
        k += 4 * stride;
    }
    while k < line.len {
        let value = matrix[line.start + k * line.step];
        let (t, s) = accumulate::<F>(top, sum, value, weights[line.weight_start + k], log_sum_exp);
        top = t;
        sum = s;
        k += stride;
    }
    (top, sum)
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
