//! One problem of the batch as the fused solver holds it: the valid block of its kernel
//! (padded rows and columns dropped), gathered in place at the front of the problem's slice of
//! the host buffer, and the half-iterations, checks and outputs over it.
//!
//! The kernel is held in one of the composed solver's two exact forms (see `solver.rs`):
//! `E = exp(K - shift)` when the spread of `K = -C/ε` allows it, so that an update is a
//! matrix-vector product, or `K` itself, with a log-sum-exp per row or column.

use std::ops::Range;

use super::kernels;
use super::rows::{self, for_row_chunks, Combine};
use super::simd;
use crate::error::OtprefError;
use crate::sinkhorn::problem::{check_padded_range, cost_error, max_spread};

/// Largest spread `max K - min K` of the shifted form in f32 (the composed solver's bound).
const MAX_SPREAD: f32 = max_spread(burn::tensor::DType::F32) as f32;

/// How the kernel is held (see the module docs).
#[derive(Debug, Clone, Copy)]
enum Form {
    /// `E = exp(K - shift)`.
    Shifted { shift: f32 },
    /// `K = -C/ε`.
    Log,
}

/// One problem's valid block and what the iterations need of it.
pub(super) struct Block<'a> {
    /// The problem's `[n, m]` slice of the host buffer; its first `rows.len() * cols.len()`
    /// entries hold the valid block's kernel, row-major.
    values: &'a mut [f32],
    /// The valid (nonzero-mass) rows and columns, by their index in the padded problem.
    rows: Vec<usize>,
    cols: Vec<usize>,
    /// Padded sizes.
    n: usize,
    m: usize,
    /// `log a` and `log b` over the valid rows and columns.
    log_a: Vec<f32>,
    log_b: Vec<f32>,
    form: Form,
    /// Split rows over threads.
    parallel: bool,
}

/// Settings a block is built with.
pub(super) struct Setup {
    pub epsilon: f64,
    pub matmul_updates: bool,
    /// Whether any problem of the batch has padding (the padded-range check is batch-wide,
    /// as in the composed solver).
    pub batch_has_padding: bool,
}

impl<'a> Block<'a> {
    /// Gathers the valid block of `values` (the problem's cost, `[a.len(), b.len()]`) into
    /// its kernel form, checking the cost as the composed solver does.
    pub fn new(
        values: &'a mut [f32],
        a: &[f64],
        b: &[f64],
        setup: &Setup,
    ) -> Result<Self, OtprefError> {
        let (n, m) = (a.len(), b.len());
        let rows: Vec<usize> = (0..n).filter(|i| a[*i] > 0.0).collect();
        let cols: Vec<usize> = (0..m).filter(|j| b[*j] > 0.0).collect();
        // -C/ε as the composed solver computes it (one f32 product).
        let scale = (-1.0 / setup.epsilon) as f32;
        let width = cols.len();
        if rows.len() < n || width < m {
            // Each entry moves to an index no larger than its own, and entries are visited in
            // increasing order: nothing is overwritten before it is read.
            for (i_new, i) in rows.iter().enumerate() {
                for (j_new, j) in cols.iter().enumerate() {
                    values[i_new * width + j_new] = values[i * m + j];
                }
            }
        }
        let range = kernels::scale_in_place(&mut values[..rows.len() * width], scale);
        if !range.kernel_finite {
            return Err(cost_error(
                range.cost_finite,
                setup.epsilon,
                burn::tensor::DType::F32,
            ));
        }
        let largest = range.top.abs().max(range.bottom.abs());
        check_padded_range(setup.batch_has_padding, largest as f64, setup.epsilon)?;

        let pairs = rows.len() * cols.len();
        let form = if setup.matmul_updates && range.top - range.bottom <= MAX_SPREAD {
            let shift = range.top;
            kernels::exp_shifted_in_place(&mut values[..pairs], shift);
            Form::Shifted { shift }
        } else {
            Form::Log
        };
        let log_masses = |masses: &[f64], valid: &[usize]| -> Vec<f32> {
            valid.iter().map(|k| (masses[*k] as f32).ln()).collect()
        };
        Ok(Self {
            log_a: log_masses(a, &rows),
            log_b: log_masses(b, &cols),
            values,
            rows,
            cols,
            n,
            m,
            form,
            parallel: rows::split(pairs),
        })
    }

    /// Valid rows and columns.
    pub fn size(&self) -> (usize, usize) {
        (self.rows.len(), self.cols.len())
    }

    /// The new row potentials `x` from `y` (`λ`: the row update's damping).
    pub fn update_x(&self, y: &[f32], lambda: f32, x: &mut [f32]) {
        let weights: Vec<f32> = self.log_b.iter().zip(y).map(|(l, y)| l + y).collect();
        self.row_log_sums(&weights, x);
        for (x, log_a) in x.iter_mut().zip(&self.log_a) {
            *x = damped(*x, *log_a, lambda);
        }
    }

    /// The new column potentials `y` from `x`.
    pub fn update_y(&self, x: &[f32], lambda: f32, y: &mut [f32]) {
        let weights: Vec<f32> = self.log_a.iter().zip(x).map(|(l, x)| l + x).collect();
        self.column_log_sums(&weights, y);
        for (y, log_b) in y.iter_mut().zip(&self.log_b) {
            *y = damped(*y, *log_b, lambda);
        }
    }

    /// `(||P1 - a||_1, rounding floor)` of the state `(x, y)`, whose column marginal is exact,
    /// from the next row update `x_new`: as `row_marginal_error` in `solver.rs`.
    pub fn row_marginal_error(&self, x: &[f32], x_new: &[f32], y: &[f32]) -> (f64, f64) {
        let (mut error, mut magnitude, mut total) = (0.0f64, 0.0f64, 0.0f64);
        for ((log_a, x), x_new) in self.log_a.iter().zip(x).zip(x_new) {
            let mass = f64::from(log_a.exp());
            error += mass * (f64::from((x - x_new).exp()) - 1.0).abs();
            magnitude += mass * f64::from(x.abs() + x_new.abs());
            total += mass;
        }
        let y_size = y.iter().fold(0.0f32, |m, y| m.max(y.abs()));
        magnitude += total * 2.0 * f64::from(y_size);
        (error, f64::from(f32::EPSILON) * magnitude)
    }

    /// `(largest change of a log-potential, rounding floor)`: as `potential_change` in
    /// `solver.rs`.
    pub fn potential_change(
        &self,
        (x, x_new): (&[f32], &[f32]),
        (y, y_new): (&[f32], &[f32]),
    ) -> (f64, f64) {
        let change = |old: &[f32], new: &[f32]| {
            old.iter()
                .zip(new)
                .fold(0.0f32, |m, (o, n)| m.max((n - o).abs()))
        };
        let size = |v: &[f32]| v.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let error = change(x, x_new).max(change(y, y_new));
        let magnitude = size(x_new).max(size(y_new));
        (
            f64::from(error),
            f64::from(f32::EPSILON) * f64::from(magnitude),
        )
    }

    /// `(log P1, log Pᵀ1)` over the padded rows and columns (0 at padding), without forming
    /// the plan: as `solve_log_marginals` in `solver.rs`.
    pub fn log_marginals(&self, x: &[f32], y: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (rows, cols) = self.log_scalings(x, y);
        let mut row_sums = vec![0.0; rows.len()];
        let mut col_sums = vec![0.0; cols.len()];
        // Each side's sum is taken with the other side's scaling relative to its largest entry,
        // so that the terms are at most 1 and the dominant one does not underflow.
        self.row_log_sums(&cols, &mut row_sums);
        self.column_log_sums(&rows, &mut col_sums);
        let log_rows = rows
            .iter()
            .zip(&row_sums)
            .map(|(r, s)| r + s)
            .collect::<Vec<_>>();
        let log_cols = cols
            .iter()
            .zip(&col_sums)
            .map(|(c, s)| c + s)
            .collect::<Vec<_>>();
        (
            scatter(&log_rows, &self.rows, self.n),
            scatter(&log_cols, &self.cols, self.m),
        )
    }

    /// Writes the plan over the whole padded `[n, m]` slice (0 on padded rows and columns) and
    /// returns whether every entry is finite.
    pub fn into_plan(self, x: &[f32], y: &[f32]) -> bool {
        let (rows, cols) = self.log_scalings(x, y);
        let width = cols.len();
        let pairs = rows.len() * width;
        let parallel = self.parallel;
        let plan = &mut self.values[..pairs];
        let top = simd::max(&cols);
        match self.form {
            // P = diag(u) E diag(v) with v = exp(cols - max cols) <= 1, when u stays finite
            // (it does unless the iterations stopped far from convergence).
            Form::Shifted { shift } if simd::max(&rows) + top + shift < MAX_SPREAD => {
                let v: Vec<f32> = cols.iter().map(|c| simd::exp(c - top)).collect();
                let u: Vec<f32> = rows.iter().map(|r| simd::exp(r + top + shift)).collect();
                for_row_chunks(plan, width, width, parallel, |first, block| {
                    kernels::scale_rows_and_columns(block, width, &u[first..], &v)
                });
            }
            form => {
                if let Form::Shifted { shift } = form {
                    kernels::ln_plus_in_place(plan, shift);
                }
                for_row_chunks(plan, width, width, parallel, |first, block| {
                    kernels::exp_of_sums(block, width, &rows[first..], &cols)
                });
            }
        }
        let finite = kernels::all_finite(&self.values[..pairs]);
        spread_to_padded(self.values, &self.rows, &self.cols, self.m);
        finite
    }

    /// `ε (x + log a)` and `ε (y + log b)` over the padded rows and columns (0 at padding).
    pub fn potentials(&self, x: &[f32], y: &[f32], epsilon: f32) -> (Vec<f32>, Vec<f32>) {
        let scaled = |v: &[f32], log_mass: &[f32]| -> Vec<f32> {
            v.iter()
                .zip(log_mass)
                .map(|(v, l)| (v + l) * epsilon)
                .collect()
        };
        (
            scatter(&scaled(x, &self.log_a), &self.rows, self.n),
            scatter(&scaled(y, &self.log_b), &self.cols, self.m),
        )
    }

    /// `log a + x` and `log b + y`: `P_ij = exp(rows_i + cols_j + K_ij)`.
    fn log_scalings(&self, x: &[f32], y: &[f32]) -> (Vec<f32>, Vec<f32>) {
        (
            self.log_a.iter().zip(x).map(|(l, x)| l + x).collect(),
            self.log_b.iter().zip(y).map(|(l, y)| l + y).collect(),
        )
    }

    /// `out_i = LSE_j(K_ij + w_j)`.
    fn row_log_sums(&self, w: &[f32], out: &mut [f32]) {
        let (n, m) = self.size();
        let kernel = &self.values[..n * m];
        let rows_from = |first: usize, count: usize| &kernel[first * m..(first + count) * m];
        match self.form {
            Form::Shifted { shift } => {
                let mut scaled = vec![0.0; w.len()];
                let top = kernels::exp_below_max(w, &mut scaled);
                for_row_chunks(out, 1, m, self.parallel, |first, out| {
                    let rows = rows_from(first, out.len());
                    kernels::log_dots(rows, m, &scaled, top + shift, out)
                });
            }
            Form::Log => for_row_chunks(out, 1, m, self.parallel, |first, out| {
                kernels::log_sum_exps(rows_from(first, out.len()), m, w, out)
            }),
        }
    }

    /// `out_j = LSE_i(K_ij + w_i)`, reading the kernel row by row (one pass with the shifted
    /// form, two with the log form: column maxima, then sums).
    fn column_log_sums(&self, w: &[f32], out: &mut [f32]) {
        let (n, m) = self.size();
        let kernel = &self.values[..n * m];
        let rows_of = |rows: &Range<usize>| &kernel[rows.start * m..rows.end * m];
        match self.form {
            Form::Shifted { shift } => {
                let mut scaled = vec![0.0; w.len()];
                let top = kernels::exp_below_max(w, &mut scaled);
                let mut sums = self.sum_over_rows(0.0, Combine::Add, |rows, acc| {
                    kernels::add_scaled_rows(rows_of(&rows), m, &scaled[rows], acc)
                });
                kernels::ln_plus_in_place(&mut sums, top + shift);
                out.copy_from_slice(&sums);
            }
            Form::Log => {
                let tops = self.sum_over_rows(f32::NEG_INFINITY, Combine::Max, |rows, acc| {
                    kernels::max_rows(rows_of(&rows), m, &w[rows], acc)
                });
                let sums = self.sum_over_rows(0.0, Combine::Add, |rows, acc| {
                    kernels::add_exp_rows(rows_of(&rows), m, &w[rows], &tops, acc)
                });
                for ((out, sum), top) in out.iter_mut().zip(&sums).zip(&tops) {
                    *out = sum.ln() + top;
                }
            }
        }
    }

    /// Folds every valid row into a column-sized accumulator (see [`rows::sum_over_rows`]).
    fn sum_over_rows(
        &self,
        init: f32,
        combine: Combine,
        fold: impl Fn(Range<usize>, &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let (n, m) = self.size();
        rows::sum_over_rows(n, m, self.parallel, init, combine, fold)
    }
}

/// `(λ - 1) log mass - λ lse`: the balanced update `-lse` when λ = 1 (as `damped` in
/// `solver.rs`).
fn damped(lse: f32, log_mass: f32, lambda: f32) -> f32 {
    if lambda == 1.0 {
        -lse
    } else {
        -lambda * lse + (lambda - 1.0) * log_mass
    }
}

/// Moves the valid block back to its padded positions and zeroes padded rows and columns.
fn spread_to_padded(values: &mut [f32], rows: &[usize], cols: &[usize], m: usize) {
    let n = values.len() / m.max(1);
    if rows.len() == n && cols.len() == m {
        return;
    }
    let width = cols.len();
    // The reverse of the gather in `Block::new`: each entry moves to an index no smaller than
    // its own, visited in decreasing order.
    for (i_new, i) in rows.iter().enumerate().rev() {
        for (j_new, j) in cols.iter().enumerate().rev() {
            values[i * m + j] = values[i_new * width + j_new];
        }
    }
    let mut valid_row = vec![false; n];
    rows.iter().for_each(|i| valid_row[*i] = true);
    let mut valid_col = vec![false; m];
    cols.iter().for_each(|j| valid_col[*j] = true);
    for (i, row) in values.chunks_exact_mut(m).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            if !(valid_row[i] && valid_col[j]) {
                *v = 0.0;
            }
        }
    }
}

/// Values over the valid positions spread to a padded vector of `len` (0 at padding).
fn scatter(values: &[f32], valid: &[usize], len: usize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    for (v, k) in values.iter().zip(valid) {
        out[*k] = *v;
    }
    out
}
