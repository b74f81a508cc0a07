//! The log-domain Sinkhorn iterations shared by the balanced and the unbalanced problem.
//!
//! With reduced potentials `x, y` (dimensionless, `f = ε (x + log a)`) the plan is
//! `P_ij = exp(log a_i + x_i + log b_j + y_j - C_ij/ε)` and one iteration is
//!
//! ```text
//! x_i = (λ_a - 1) log a_i - λ_a LSE_j(log b_j + y_j - C_ij/ε)
//! y_j = (λ_b - 1) log b_j - λ_b LSE_i(log a_i + x_i - C_ij/ε)
//! ```
//!
//! with `λ = ρ/(ρ+ε)` (1 for an exact marginal). Keeping `log a`, `log b` inside the
//! log-sum-exp is what makes padding free: a padded row has `log a = LOG_ZERO`, so it never
//! contributes, and no potential ever needs to be infinite.
//!
//! Two exact ways to evaluate the log-sum-exp, chosen once per solve ([`Kernel`]):
//! - `Shifted`: when the cost's spread over ε is moderate (the common case, e.g. costs in
//!   [0, 1] with ε >= 0.02 in f32), `LSE_j(K_ij + w_j) = log Σ_j E_ij exp(w_j - t) + k + t`
//!   with the kernel `E = exp(K - k)` computed once (`k = max K`, `t = max w`). Each update
//!   is then a batched matrix-vector product. Its largest term is at least `exp(-(max K -
//!   min K))`, so the sum cannot underflow as long as that spread stays below [`max_spread`](super::problem::max_spread).
//! - `Log`: the textbook log-sum-exp over `[batch, n, m]`, for any ε, e.g. 1e-3.

use burn::tensor::{backend::Backend, Bool, DType, Tensor, TensorData};

#[cfg(feature = "fused-cpu")]
use super::backend::fused_serves;
use super::backend::{reduce_on, OtBackend};
use super::config::{GradientMode, UnbalancedConfig};
#[cfg(feature = "fused-cpu")]
use super::fused;
use super::problem::{build, check_inputs, max_spread, plan_overflow_error, Checked, Problem};
use super::reductions::{spread_over_columns, spread_over_rows, Axis, Reduction};
use super::stopping::{convergence, ProblemStats};
use super::transport::{Convergence, Transport};
use crate::error::OtprefError;
use crate::host::{all_finite, to_host};
use crate::precision::{narrowed, widened};

/// Validates the inputs and solves the batch on `B`. Autodiff records the iterations when
/// the inputs are tracked (the unrolled mode); detach them first for no graph.
///
/// With [`UnbalancedConfig::fast_paths`], backends whose tensors live in host memory run the
/// fused CPU solver instead of the composed tensor ops, and CubeCL backends run each update's
/// log-sum-exp as one kernel; the unrolled mode, whose graph needs the ops, runs neither.
pub(crate) fn solve<B: OtBackend>(
    cost: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    config: &UnbalancedConfig,
) -> Result<Transport<B>, OtprefError> {
    config.validate()?;
    let dtype = cost.dtype();
    // Checked in the input dtype: its rounding sets the tolerance on the mass totals.
    let checked = check_inputs(&cost, &a, &b, config.epsilon, config.is_balanced())?;
    let transport = solve_checked(cost, a, b, &checked, config)?;
    // Computed in f32, the solution can still exceed f16's range.
    if dtype == DType::F16 && !representable(&transport.plan, &transport.f, &transport.g) {
        return Err(OtprefError::UnsupportedDType(
            "the solution (plan or potentials, computed in f32) exceeds f16's largest value, \
             65504; pass cost, a and b in f32 or bf16"
                .into(),
        ));
    }
    Ok(transport)
}

/// [`solve`] after the checks. Half-precision inputs are solved in f32 (f16's range is too
/// small for the log domain, and both round too coarsely for the iterations' sums) and the
/// results come back in the inputs' dtype.
fn solve_checked<B: OtBackend>(
    cost: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    checked: &Checked,
    config: &UnbalancedConfig,
) -> Result<Transport<B>, OtprefError> {
    let dtype = cost.dtype();
    #[cfg(feature = "fused-cpu")]
    if fused_serves::<B>(config, dtype) {
        // Reads any float dtype into f32 on the host itself.
        return fused::solve(cost, checked, config);
    }
    let (cost, a, b) = (widened(cost), widened(a), widened(b));
    let solution = run(cost, a, b, checked, config, None)?;
    let plan = match solution.scalings() {
        Some((u, v, kernel)) => u.unsqueeze_dim::<3>(2).matmul(v.unsqueeze_dim::<3>(1)) * kernel,
        None => solution.full_plan(),
    };
    let Solution {
        problem,
        x,
        y,
        stats,
        ..
    } = solution;
    let convergence = convergence(&stats);
    let epsilon = config.epsilon;
    let f = (x + problem.log_a_or_zero)
        .mul_scalar(epsilon)
        .mask_fill(problem.pad_a, 0.0);
    let g = (y + problem.log_b_or_zero)
        .mul_scalar(epsilon)
        .mask_fill(problem.pad_b, 0.0);
    // A balanced plan is bounded by its masses; a relaxed one's mass grows like exp(-C/(ε+ρ))
    // and can overflow the dtype when costs are large and negative.
    if !config.is_balanced() && !representable(&plan, &f, &g) {
        return Err(plan_overflow_error(dtype));
    }
    Ok(Transport {
        plan: narrowed(plan, dtype),
        f: narrowed(f, dtype),
        g: narrowed(g, dtype),
        iterations: convergence.iterations,
        converged: convergence.converged,
        marginal_error: convergence.marginal_error,
    })
}

/// Whether every entry of plan and potentials is finite: one read of their sums (NaN and
/// infinities propagate through a sum), and the exact scans only when a sum is not finite
/// (in f16 a sum of finite entries can overflow).
fn representable<B: Backend>(plan: &Tensor<B, 3>, f: &Tensor<B, 2>, g: &Tensor<B, 2>) -> bool {
    let sums = vec![
        plan.clone().detach().sum(),
        f.clone().detach().sum(),
        g.clone().detach().sum(),
    ];
    to_host(Tensor::cat(sums, 0)).iter().all(|s| s.is_finite())
        || (all_finite(plan) && all_finite(f) && all_finite(g))
}

/// The logarithms of the plan's marginals `(log P1, log Pᵀ1)` and the solver's report,
/// without forming the plan when the shifted kernel allows (two matrix-vector products). For
/// callers that only need the marginals, such as OTPO; in the log domain because a plan whose
/// mass underflows the dtype still has well-defined marginal ratios. Padded entries hold
/// arbitrary finite values: mask them.
///
/// `cost_range`: known bounds `(low, high)` on the cost, with `low <= 0 <= high` when there is
/// padding (padded entries become 0), or `None`.
pub(crate) fn solve_log_marginals<B: OtBackend>(
    cost: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    config: &UnbalancedConfig,
    cost_range: Option<(f64, f64)>,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>, Convergence), OtprefError> {
    config.validate()?;
    let checked = check_inputs(&cost, &a, &b, config.epsilon, config.is_balanced())?;
    let dtype = cost.dtype();
    #[cfg(feature = "fused-cpu")]
    if fused_serves::<B>(config, dtype) {
        return fused::solve_log_marginals(cost, &checked, config);
    }
    let (cost, a, b) = (widened(cost), widened(a), widened(b));
    let solution = run(cost, a, b, &checked, config, cost_range)?;
    let (rows, cols) = solution.log_scalings();
    let (log_rows, log_cols) = match &solution.kernel {
        // P = diag(u) E diag(v) with u = exp(rows + shift), v = exp(cols): each side's sum is
        // taken with the other side's scaling divided by its max, so that the dominant term
        // of every valid row and column is at least exp(-max_spread) and cannot underflow.
        Kernel::Shifted { kernel, shift } => {
            let row_top = rows.clone().detach().max_dim(1);
            let col_top = cols.clone().detach().max_dim(1);
            let u = (rows.clone() - row_top.clone()).exp();
            let v = (cols.clone() - col_top.clone()).exp();
            let row_sums = kernel.clone().matmul(v.unsqueeze_dim(2)).squeeze_dim(2);
            let col_sums = u
                .unsqueeze_dim::<3>(1)
                .matmul(kernel.clone())
                .squeeze_dim(1);
            let pad_a = solution.problem.pad_a.clone();
            let pad_b = solution.problem.pad_b.clone();
            (
                rows + row_sums.mask_fill(pad_a, 1.0).log() + col_top.add_scalar(*shift),
                cols + col_sums.mask_fill(pad_b, 1.0).log() + row_top.add_scalar(*shift),
            )
        }
        // log P1 = rows + LSE_j(K_ij + cols_j), and the same over columns.
        Kernel::Log { one_pass } => {
            let log_kernel = &solution.problem.log_kernel;
            let lse = |weights, axis| log_sum_exp_on(*one_pass, log_kernel, weights, axis);
            (
                rows.clone() + lse(cols.clone(), Axis::Rows),
                cols + lse(rows, Axis::Columns),
            )
        }
    };
    Ok((
        narrowed(log_rows, dtype),
        narrowed(log_cols, dtype),
        convergence(&solution.stats),
    ))
}

/// A solved batch, before the plan is formed.
struct Solution<B: Backend> {
    problem: Problem<B>,
    kernel: Kernel<B>,
    x: Tensor<B, 2>,
    y: Tensor<B, 2>,
    stats: Vec<ProblemStats>,
}

/// The composed solver on checked inputs.
fn run<B: OtBackend>(
    cost: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    checked: &Checked,
    config: &UnbalancedConfig,
    cost_range: Option<(f64, f64)>,
) -> Result<Solution<B>, OtprefError> {
    let problem = build(cost, a, b, checked, config.epsilon)?;
    // The one-pass kernels take f32 (half precision arrives widened; f64 keeps the matrix
    // form), and the unrolled mode's graph needs the composed ops.
    let one_pass = config.fast_paths
        && B::ONE_PASS_REDUCTIONS
        && config.gradient != GradientMode::Unrolled
        && problem.log_kernel.dtype() == DType::F32;
    let forms = (config.matmul_updates, one_pass);
    let kernel = Kernel::choose(&problem, forms, config.epsilon, cost_range);
    let (x, y, stats) = iterate(&problem, &kernel, checked.dims.batch, config);
    Ok(Solution {
        problem,
        kernel,
        x,
        y,
        stats,
    })
}

impl<B: OtBackend> Solution<B> {
    /// `log a + x` and `log b + y`: `P_ij = exp(rows_i + cols_j - C_ij/ε)`.
    fn log_scalings(&self) -> (Tensor<B, 2>, Tensor<B, 2>) {
        (
            self.problem.log_a.clone() + self.x.clone(),
            self.problem.log_b.clone() + self.y.clone(),
        )
    }

    /// `(u, v, E)` with `P = diag(u) E diag(v)` and `v = exp(cols - max cols) <= 1`, when the
    /// shifted kernel is in use. `u` stays finite by the spread bound on `E`; the check guards
    /// iterates stopped far from convergence (then `None`: use [`Self::full_plan`]).
    fn scalings(&self) -> Option<(Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 3>)> {
        let Kernel::Shifted { kernel, shift } = &self.kernel else {
            return None;
        };
        let (rows, cols) = self.log_scalings();
        let top = cols.clone().detach().max_dim(1);
        let log_u = (rows + top.clone()).add_scalar(*shift);
        let largest = to_host(log_u.clone().detach().max().unsqueeze::<2>())[0];
        (largest < max_spread(log_u.dtype()))
            .then(|| (log_u.exp(), (cols - top).exp(), kernel.clone()))
    }

    /// `P_ij = exp(rows_i + cols_j - C_ij/ε)` over the full matrix.
    fn full_plan(&self) -> Tensor<B, 3> {
        self.log_plan().exp()
    }

    /// `log P_ij = rows_i + cols_j - C_ij/ε`.
    fn log_plan(&self) -> Tensor<B, 3> {
        let (rows, cols) = self.log_scalings();
        let [_, n, m] = self.problem.log_kernel.dims();
        spread_over_columns(rows, m) + spread_over_rows(cols, n) + self.problem.log_kernel.clone()
    }
}

/// Runs the iterations until every problem has converged or hit `max_iters`.
///
/// A problem that has converged is frozen (its potentials no longer change) while the others
/// go on, so each problem's result is the one a solver run on it alone would return.
fn iterate<B: OtBackend>(
    problem: &Problem<B>,
    kernel: &Kernel<B>,
    batch: usize,
    config: &UnbalancedConfig,
) -> (Tensor<B, 2>, Tensor<B, 2>, Vec<ProblemStats>) {
    let balanced = config.is_balanced();
    let (lambda_a, lambda_b) = (config.lambda_a(), config.lambda_b());
    let [_, n, m] = problem.log_kernel.dims();
    let mut x = problem.log_a.zeros_like();
    let mut y = problem.log_b.zeros_like();
    let mut stats = vec![ProblemStats::new(config.max_iters); batch];
    // `done` is None until some problem has converged: no masking cost before that.
    let mut done: Option<Tensor<B, 2, Bool>> = None;
    let device = problem.log_a.device();

    for iteration in 1..=config.max_iters {
        let check = iteration % config.check_every == 0 || iteration == config.max_iters;

        let x_new = update_x(problem, kernel, &y, lambda_a);
        if check && balanced && iteration > 1 {
            // Row marginal of the current (x, y), whose column marginal is exact:
            // P1 = a * exp(x - x_new), so ||P1 - a||_1 = Σ a |exp(x - x_new) - 1|.
            let errors = row_marginal_error(problem, &x, &x_new, &y);
            done = record_convergence(&mut stats, &errors, iteration - 1, config, &device);
        }
        let x_next = freeze(x_new, &x, done.as_ref(), n);

        let y_new = update_y(problem, kernel, &x_next, lambda_b);
        let y_next = freeze(y_new, &y, done.as_ref(), m);
        if check && !balanced {
            let errors = potential_change(problem, &x, &x_next, &y, &y_next);
            done = record_convergence(&mut stats, &errors, iteration, config, &device);
        }
        x = x_next;
        y = y_next;
        if stats.iter().all(|s| s.converged) {
            break;
        }
    }
    // A single balanced iteration never measured the row marginal (the check needs one more
    // x-update): measure the final state, so that the report is its error, not infinity.
    if balanced && stats.iter().any(|s| s.error.is_infinite()) {
        let x_new = update_x(problem, kernel, &y, lambda_a);
        let errors = row_marginal_error(problem, &x, &x_new, &y);
        record_convergence::<B>(&mut stats, &errors, config.max_iters, config, &device);
    }
    (x, y, stats)
}

/// How the log-sum-exp of an update is evaluated (see the module docs).
enum Kernel<B: Backend> {
    /// `E = exp(K - shift)` with padded pairs set to 0.
    Shifted { kernel: Tensor<B, 3>, shift: f64 },
    /// Log-sum-exp over the full `[batch, n, m]` scores; `one_pass`: in the backend's one-pass
    /// kernel ([`OtBackend::reduce_lines`]).
    Log { one_pass: bool },
}

impl<B: OtBackend> Kernel<B> {
    /// `cost_range`: bounds `(low, high)` on every cost entry, padding (0) included, when the
    /// caller knows them; saves the two reductions that find them.
    fn choose(
        problem: &Problem<B>,
        (matmul_updates, one_pass): (bool, bool),
        epsilon: f64,
        cost_range: Option<(f64, f64)>,
    ) -> Self {
        // A one-pass log-sum-exp reads the log kernel once per update, as the matrix-vector
        // product reads `E`: the exact form then costs nothing extra.
        if !matmul_updates || one_pass {
            return Kernel::Log { one_pass };
        }
        // Padded pairs hold K = 0 and are counted in the spread: conservative, never wrong.
        let (max, min) = match cost_range {
            Some((low, high)) => (-low / epsilon, -high / epsilon),
            None => {
                let log_kernel = problem.log_kernel.clone().detach();
                let extremes = to_host(Tensor::cat(
                    vec![
                        log_kernel.clone().max().unsqueeze::<2>(),
                        log_kernel.min().unsqueeze::<2>(),
                    ],
                    1,
                ));
                (extremes[0], extremes[1])
            }
        };
        if max - min > max_spread(problem.log_kernel.dtype()) {
            return Kernel::Log { one_pass };
        }
        let kernel = problem.log_kernel.clone().sub_scalar(max).exp();
        // exp(0 - max) <= 1 at padded pairs, so zeroing them by a product is NaN-free.
        let kernel = match &problem.valid_pair {
            Some(valid) => kernel * valid.clone(),
            None => kernel,
        };
        Kernel::Shifted { kernel, shift: max }
    }
}

fn update_x<B: OtBackend>(
    problem: &Problem<B>,
    kernel: &Kernel<B>,
    y: &Tensor<B, 2>,
    lambda: f64,
) -> Tensor<B, 2> {
    let weights = problem.log_b.clone() + y.clone();
    let lse = match kernel {
        Kernel::Shifted { kernel, shift } => {
            let top = weights.clone().detach().max_dim(1);
            let scaled = (weights - top.clone()).exp().unsqueeze_dim::<3>(2);
            let sums = kernel.clone().matmul(scaled).squeeze_dim::<2>(2);
            // Padded rows have an all-zero kernel row: keep their (unused) value finite.
            sums.mask_fill(problem.pad_a.clone(), 1.0).log() + top + *shift
        }
        Kernel::Log { one_pass } => {
            log_sum_exp_on(*one_pass, &problem.log_kernel, weights, Axis::Rows)
        }
    };
    damped(lse, &problem.log_a_or_zero, lambda)
}

fn update_y<B: OtBackend>(
    problem: &Problem<B>,
    kernel: &Kernel<B>,
    x: &Tensor<B, 2>,
    lambda: f64,
) -> Tensor<B, 2> {
    let weights = problem.log_a.clone() + x.clone();
    let lse = match kernel {
        Kernel::Shifted { kernel, shift } => {
            let top = weights.clone().detach().max_dim(1);
            let scaled = (weights - top.clone()).exp().unsqueeze_dim::<3>(1);
            let sums = scaled.matmul(kernel.clone()).squeeze_dim::<2>(1);
            sums.mask_fill(problem.pad_b.clone(), 1.0).log() + top + *shift
        }
        Kernel::Log { one_pass } => {
            log_sum_exp_on(*one_pass, &problem.log_kernel, weights, Axis::Columns)
        }
    };
    damped(lse, &problem.log_b_or_zero, lambda)
}

/// `LSE(K + w)` along `axis`, on the one-pass kernel when `one_pass`.
fn log_sum_exp_on<B: OtBackend>(
    one_pass: bool,
    log_kernel: &Tensor<B, 3>,
    weights: Tensor<B, 2>,
    axis: Axis,
) -> Tensor<B, 2> {
    reduce_on(
        one_pass,
        log_kernel.clone(),
        weights,
        axis,
        Reduction::LogSumExp,
    )
}

/// `(λ - 1) log mass - λ lse`: the balanced update `-lse` when λ = 1.
fn damped<B: Backend>(lse: Tensor<B, 2>, log_mass: &Tensor<B, 2>, lambda: f64) -> Tensor<B, 2> {
    if lambda == 1.0 {
        lse.neg()
    } else {
        lse.mul_scalar(-lambda) + log_mass.clone().mul_scalar(lambda - 1.0)
    }
}

/// Keeps the old values of problems that are already done.
fn freeze<B: Backend>(
    new: Tensor<B, 2>,
    old: &Tensor<B, 2>,
    done: Option<&Tensor<B, 2, Bool>>,
    len: usize,
) -> Tensor<B, 2> {
    match done {
        Some(done) => {
            let [batch, _] = new.dims();
            new.mask_where(done.clone().expand([batch, len]), old.clone())
        }
        None => new,
    }
}

/// Each problem's `(error, rounding floor)`: ||P1 - a||_1 of the current state, and the
/// error that rounding alone produces, `eps Σ_i a_i (|x_i| + |x_new,i| + max_j |y_j|)`
/// (the update of `x` sums terms `y_j - C_ij/ε` whose size is about `|y|`).
///
/// Potentials of size |x| are only known to `|x| eps`, so in f32 a tolerance of 1e-6 can be
/// out of reach for large `C/ε`; a problem whose error is below its floor and has not improved
/// for [`STALE_CHECKS`](super::stopping::STALE_CHECKS) checks has converged to working precision.
fn row_marginal_error<B: Backend>(
    problem: &Problem<B>,
    x: &Tensor<B, 2>,
    x_new: &Tensor<B, 2>,
    y: &Tensor<B, 2>,
) -> Vec<(f64, f64)> {
    let a = problem.log_a.clone().detach().exp();
    let (x, x_new) = (
        x.clone().detach().mask_fill(problem.pad_a.clone(), 0.0),
        x_new.clone().detach().mask_fill(problem.pad_a.clone(), 0.0),
    );
    let y_size = y
        .clone()
        .detach()
        .mask_fill(problem.pad_b.clone(), 0.0)
        .abs()
        .max_dim(1);
    let errors = (a.clone() * ((x.clone() - x_new.clone()).exp() - 1.0).abs()).sum_dim(1);
    let magnitude =
        (a.clone() * (x.abs() + x_new.abs())).sum_dim(1) + a.sum_dim(1) * y_size.mul_scalar(2.0);
    with_floor(errors, magnitude)
}

/// Each problem's `(largest change of a log-potential, rounding floor eps max |x|, |y|)`.
fn potential_change<B: Backend>(
    problem: &Problem<B>,
    x: &Tensor<B, 2>,
    x_new: &Tensor<B, 2>,
    y: &Tensor<B, 2>,
    y_new: &Tensor<B, 2>,
) -> Vec<(f64, f64)> {
    let valid =
        |t: &Tensor<B, 2>, pad: &Tensor<B, 2, Bool>| t.clone().detach().mask_fill(pad.clone(), 0.0);
    let (x, x_new) = (valid(x, &problem.pad_a), valid(x_new, &problem.pad_a));
    let (y, y_new) = (valid(y, &problem.pad_b), valid(y_new, &problem.pad_b));
    let dx = (x_new.clone() - x).abs().max_dim(1);
    let dy = (y_new.clone() - y).abs().max_dim(1);
    let magnitude = x_new.abs().max_dim(1).max_pair(y_new.abs().max_dim(1));
    with_floor(dx.max_pair(dy), magnitude)
}

/// Pairs each error with `eps magnitude`, in one transfer to the host.
fn with_floor<B: Backend>(errors: Tensor<B, 2>, magnitude: Tensor<B, 2>) -> Vec<(f64, f64)> {
    let eps = match errors.dtype() {
        DType::F64 => f64::EPSILON,
        DType::F32 | DType::Flex32 => f32::EPSILON as f64,
        _ => 1e-3,
    };
    let both = to_host(Tensor::cat(vec![errors, magnitude], 1));
    both.chunks(2)
        .map(|pair| (pair[0], eps * pair[1]))
        .collect()
}

/// Marks problems that meet the tolerance; returns the mask of problems that are done.
fn record_convergence<B: Backend>(
    stats: &mut [ProblemStats],
    errors: &[(f64, f64)],
    iteration: usize,
    config: &UnbalancedConfig,
    device: &B::Device,
) -> Option<Tensor<B, 2, Bool>> {
    for (problem, (error, floor)) in stats.iter_mut().zip(errors) {
        problem.record(*error, *floor, iteration, config.tolerance);
    }
    if !stats.iter().any(|s| s.converged) {
        return None;
    }
    let converged: Vec<bool> = stats.iter().map(|s| s.converged).collect();
    let data = TensorData::new(converged, [stats.len(), 1]);
    Some(Tensor::from_data(data, device))
}
