//! Splitting one problem's rows over threads: a large problem's passes over its kernel (or
//! plan) run as tasks of about [`PAIRS_PER_TASK`] entries, whose column accumulators are then
//! merged; a small problem runs each pass as one task.

use std::ops::Range;

use rayon::prelude::*;

/// Problems with at least this many pairs also split their rows over threads; below, a
/// fork-join per pass costs more than it saves.
const PARALLEL_PAIRS: usize = 1 << 17;

/// Pairs per parallel task when a problem's rows are split.
const PAIRS_PER_TASK: usize = 1 << 14;

/// Whether a problem of `pairs` entries splits its rows over threads.
pub(super) fn split(pairs: usize) -> bool {
    pairs >= PARALLEL_PAIRS && rayon::current_num_threads() > 1
}

/// Rows per task for rows `width` entries wide.
pub(super) fn rows_per_task(width: usize) -> usize {
    (PAIRS_PER_TASK / width.max(1)).max(1)
}

/// Folds `n` rows `m` wide into a column-sized accumulator that starts at `init`:
/// `fold(rows, acc)` over one block of rows, or many in parallel (one accumulator per task,
/// merged pairwise by `combine` as tasks finish, so only a few are alive at once).
pub(super) fn sum_over_rows(
    n: usize,
    m: usize,
    parallel: bool,
    init: f32,
    combine: Combine,
    fold: impl Fn(Range<usize>, &mut [f32]) + Sync,
) -> Vec<f32> {
    let run = |rows: Range<usize>| {
        let mut acc = vec![init; m];
        fold(rows, &mut acc);
        acc
    };
    if !parallel {
        return run(0..n);
    }
    let per_task = rows_per_task(m);
    (0..n.div_ceil(per_task))
        .into_par_iter()
        .map(|k| run(k * per_task..((k + 1) * per_task).min(n)))
        .reduce_with(|mut acc, other| {
            combine.apply(&mut acc, &other);
            acc
        })
        .unwrap_or_else(|| vec![init; m])
}

/// How per-block column accumulators merge.
#[derive(Clone, Copy)]
pub(super) enum Combine {
    Add,
    Max,
}

impl Combine {
    pub(super) fn apply(self, acc: &mut [f32], other: &[f32]) {
        match self {
            Combine::Add => acc.iter_mut().zip(other).for_each(|(a, o)| *a += o),
            Combine::Max => acc.iter_mut().zip(other).for_each(|(a, o)| *a = a.max(*o)),
        }
    }
}

/// Runs `op(first_row, chunk)` over chunks of `values`, which holds `per_row` values for each
/// row of a kernel `row_width` wide: one chunk, or, when `parallel`, chunks of about
/// [`PAIRS_PER_TASK`] kernel entries in parallel.
pub(super) fn for_row_chunks(
    values: &mut [f32],
    per_row: usize,
    row_width: usize,
    parallel: bool,
    op: impl Fn(usize, &mut [f32]) + Sync,
) {
    if per_row == 0 {
        return;
    }
    if !parallel {
        return op(0, values);
    }
    let per_task = rows_per_task(row_width);
    values
        .par_chunks_mut(per_task * per_row)
        .enumerate()
        .for_each(|(task, chunk)| op(task * per_task, chunk));
}
