//! The fused CPU solver: the composed solver's iterations (`solver.rs`, the reference
//! implementation) run on host memory, for backends whose tensors live there (`Flex`,
//! `NdArray`).
//!
//! Where its speed comes from:
//! - each half-iteration reads the kernel once, where the composed ops make several passes
//!   and materialise `[batch, n, m]` temporaries;
//! - problems run in parallel, each to its own convergence on one thread, with its kernel in
//!   that core's cache; the rows of a large problem are split over threads too;
//! - the loops are compiled for the CPU's vector instructions, chosen at run time;
//! - padded rows and columns are dropped before iterating, so a padded problem costs what
//!   its valid block costs;
//! - the kernel is built in the buffer the cost was read into, and the plan in the kernel's.
//!
//! Same updates, checks, stopping rule and reports as the reference; results agree to f32
//! rounding (`tests/suite/fused.rs`). f16/bf16 costs are computed in f32 and the results come
//! back in the input dtype. The implicit backward after a fused forward runs here too
//! (`vjp.rs`).

mod block;
mod kernels;
mod rows;
mod simd;
mod vjp;

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use rayon::prelude::*;

use self::block::{Block, Setup};
use super::config::UnbalancedConfig;
use super::problem::{plan_overflow_error, Checked};
use super::stopping::{convergence, ProblemStats};
use super::transport::{Convergence, Transport};
use crate::error::OtprefError;

pub(crate) use self::vjp::fixed_point_vjp;

/// The fused counterpart of `solver::solve`.
pub(crate) fn solve<B: Backend>(
    cost: Tensor<B, 3>,
    checked: &Checked,
    config: &UnbalancedConfig,
) -> Result<Transport<B>, OtprefError> {
    let (device, dtype) = (cost.device(), cost.dtype());
    let [batch, n, m] = cost.dims();
    let mut buffer = HostBuffer::new(cost);
    let epsilon = config.epsilon as f32;
    let solved = solve_each(buffer.values(), checked, config, |block, x, y| {
        let (f, g) = block.potentials(&x, &y, epsilon);
        let finite = f.iter().chain(&g).all(|v| v.is_finite());
        let plan_finite = block.into_plan(&x, &y);
        (f, g, finite && plan_finite)
    })?;
    if !config.is_balanced() && solved.iter().any(|(_, (_, _, finite))| !finite) {
        return Err(plan_overflow_error(dtype));
    }
    let (f, g, report) = gather(solved, |(f, g, _)| (f, g));
    Ok(Transport {
        plan: buffer.into_tensor(dtype, &device),
        f: to_device(f, [batch, n], dtype, &device),
        g: to_device(g, [batch, m], dtype, &device),
        iterations: report.iterations,
        converged: report.converged,
        marginal_error: report.marginal_error,
    })
}

/// The fused counterpart of `solver::solve_log_marginals` (0 at padded entries).
pub(crate) fn solve_log_marginals<B: Backend>(
    cost: Tensor<B, 3>,
    checked: &Checked,
    config: &UnbalancedConfig,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>, Convergence), OtprefError> {
    let (device, dtype) = (cost.device(), cost.dtype());
    let [batch, n, m] = cost.dims();
    let mut buffer = HostBuffer::new(cost);
    let solved = solve_each(buffer.values(), checked, config, |block, x, y| {
        block.log_marginals(&x, &y)
    })?;
    let (log_rows, log_cols, report) = gather(solved, |pair| pair);
    Ok((
        to_device(log_rows, [batch, n], dtype, &device),
        to_device(log_cols, [batch, m], dtype, &device),
        report,
    ))
}

/// Solves every problem of the batch held in `values` (`[batch, n, m]`, the cost; each
/// problem's slice is reused for its kernel), in parallel, and hands each solved block and
/// its potentials `(x, y)` to `finish`. The first failing problem's error, in batch order.
fn solve_each<T: Send>(
    values: &mut [f32],
    checked: &Checked,
    config: &UnbalancedConfig,
    finish: impl Fn(Block<'_>, Vec<f32>, Vec<f32>) -> T + Sync,
) -> Result<Vec<(ProblemStats, T)>, OtprefError> {
    let (n, m) = (checked.dims.n, checked.dims.m);
    let setup = Setup {
        epsilon: config.epsilon,
        matmul_updates: config.matmul_updates,
        batch_has_padding: checked.has_padding,
    };
    let results: Vec<Result<(ProblemStats, T), OtprefError>> = values
        .par_chunks_mut(n * m)
        .enumerate()
        .map(|(p, values)| {
            let a = &checked.a[p * n..(p + 1) * n];
            let b = &checked.b[p * m..(p + 1) * m];
            let block = Block::new(values, a, b, &setup)?;
            let (x, y, stats) = iterate(&block, config);
            Ok((stats, finish(block, x, y)))
        })
        .collect();
    results.into_iter().collect()
}

/// One problem's iterations, step for step those of `solver::iterate` for a batch of one:
/// the same updates, the same checks at the same iterations, the same stopping rule.
fn iterate(block: &Block<'_>, config: &UnbalancedConfig) -> (Vec<f32>, Vec<f32>, ProblemStats) {
    let balanced = config.is_balanced();
    let (lambda_a, lambda_b) = (config.lambda_a() as f32, config.lambda_b() as f32);
    let (n, m) = block.size();
    let (mut x, mut y) = (vec![0.0; n], vec![0.0; m]);
    let (mut x_new, mut y_new) = (vec![0.0; n], vec![0.0; m]);
    let mut stats = ProblemStats::new(config.max_iters);
    for iteration in 1..=config.max_iters {
        let check = iteration % config.check_every == 0 || iteration == config.max_iters;
        block.update_x(&y, lambda_a, &mut x_new);
        if check && balanced && iteration > 1 {
            // The state (x, y) of the previous iteration, measured by the row update.
            let (error, floor) = block.row_marginal_error(&x, &x_new, &y);
            if stats.record(error, floor, iteration - 1, config.tolerance) {
                return (x, y, stats);
            }
        }
        block.update_y(&x_new, lambda_b, &mut y_new);
        if check && !balanced {
            let (error, floor) = block.potential_change((&x, &x_new), (&y, &y_new));
            if stats.record(error, floor, iteration, config.tolerance) {
                return (x_new, y_new, stats);
            }
        }
        std::mem::swap(&mut x, &mut x_new);
        std::mem::swap(&mut y, &mut y_new);
    }
    // As in the reference: a balanced run that never measured its row marginal (one
    // iteration) measures its final state.
    if balanced && stats.error.is_infinite() {
        block.update_x(&y, lambda_a, &mut x_new);
        let (error, floor) = block.row_marginal_error(&x, &x_new, &y);
        stats.record(error, floor, config.max_iters, config.tolerance);
    }
    (x, y, stats)
}

/// Concatenates each problem's row and column vectors (as `split` gives them) and collects
/// the report.
fn gather<T>(
    solved: Vec<(ProblemStats, T)>,
    split: impl Fn(T) -> (Vec<f32>, Vec<f32>),
) -> (Vec<f32>, Vec<f32>, Convergence) {
    let mut stats = Vec::with_capacity(solved.len());
    let (mut rows, mut cols) = (Vec::new(), Vec::new());
    for (problem_stats, outputs) in solved {
        let (r, c) = split(outputs);
        rows.extend(r);
        cols.extend(c);
        stats.push(problem_stats);
    }
    (rows, cols, convergence(&stats))
}

/// A tensor's values as f32 in host memory, to be worked on in place and returned as a
/// tensor of the same shape. On `Flex` a shared tensor costs one copy; a uniquely owned one
/// is handed over without copying, both ways.
pub(crate) struct HostBuffer {
    data: TensorData,
}

impl HostBuffer {
    /// Any tensor. Through a tensor op first: its result is uniquely owned (computed in place
    /// when the input already is), where reading a shared tensor directly copies it (twice,
    /// on Flex, into fresh allocations).
    pub(crate) fn new<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Self {
        let tensor = match tensor.dtype() {
            DType::F32 => tensor.mul_scalar(1.0),
            _ => tensor.cast(DType::F32),
        };
        Self::owned(tensor)
    }

    /// An f32 tensor nothing else holds (the fresh result of an op).
    pub(crate) fn owned<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> Self {
        let mut data = tensor.into_data();
        // Bytes from elsewhere may be too loosely aligned to view as f32: copy them then.
        if data.as_mut_slice::<f32>().is_err() {
            let values = data.iter::<f32>().collect::<Vec<_>>();
            data = TensorData::new(values, data.shape.clone());
        }
        Self { data }
    }

    pub(crate) fn values(&mut self) -> &mut [f32] {
        self.data
            .as_mut_slice::<f32>()
            .expect("checked in HostBuffer::owned")
    }

    pub(crate) fn into_tensor<B: Backend, const D: usize>(
        self,
        dtype: DType,
        device: &B::Device,
    ) -> Tensor<B, D> {
        tensor_from(self.data, dtype, device)
    }
}

/// Host values as a tensor of `dtype` on `device`.
fn to_device<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    dtype: DType,
    device: &B::Device,
) -> Tensor<B, D> {
    tensor_from(TensorData::new(values, shape), dtype, device)
}

/// f32 host data as a tensor of `dtype` on `device`.
fn tensor_from<B: Backend, const D: usize>(
    data: TensorData,
    dtype: DType,
    device: &B::Device,
) -> Tensor<B, D> {
    let data = match dtype {
        DType::F32 => data,
        _ => data.convert_dtype(dtype),
    };
    Tensor::from_data(data, (device, dtype))
}
