//! Batched, log-domain, padded entropic optimal transport as differentiable burn ops.
//!
//! - [`sinkhorn`]: balanced problems (`P1 = a`, `Pᵀ1 = b`);
//! - [`unbalanced_sinkhorn`]: marginals relaxed by KL penalties of strength ρ
//!   (POT's `reg_type="entropy"`), either side possibly exact (`ρ = ∞`, semi-relaxed).
//!
//! Both share one solver core (`solver`), input checks (`problem`) and the implicit backward
//! (`implicit`). Imports run one way: inputs (`config`, `problem`, `transport`,
//! `reductions`) → what backends can do (`backend`, `backends`, `cube`) → the stopping rule
//! (`stopping`) and the reference backward (`adjoint`) → the solvers (`fused`, `solver`) →
//! the implicit backward (`implicit`) → the public functions here.

mod adjoint;
mod backend;
mod backends;
mod config;
#[cfg(feature = "cubecl")]
mod cube;
#[cfg(feature = "fused-cpu")]
mod fused;
mod implicit;
mod problem;
mod reductions;
mod solver;
mod stopping;
mod transport;

use burn::tensor::Tensor;

pub(crate) use backend::fused_serves;
pub use backend::OtBackend;
pub(crate) use config::{fast_paths_default, FAST_PATHS_DEFAULT};
pub use config::{GradientMode, SinkhornConfig, UnbalancedConfig};
pub(crate) use problem::LOG_ZERO;
pub use transport::{Convergence, Transport};

#[cfg(feature = "fused-cpu")]
pub(crate) use fused::HostBuffer;
pub(crate) use reductions::log_sum_exp;
pub use reductions::{Axis, Reduction};
pub(crate) use solver::solve_log_marginals;

use crate::error::OtprefError;

/// Solves a batch of balanced entropic OT problems in the log domain.
///
/// ```text
/// P* = argmin_{P >= 0, P1 = a, Pᵀ1 = b} <P, C> + ε Σ P (log P - 1)
/// f_i = -ε LSE_j(log b_j + (g_j - C_ij)/ε) ... (POT's `sinkhorn_log`)
/// ```
///
/// - `cost`: `[batch, n, m]`; `a`: `[batch, n]`; `b`: `[batch, m]`, with `Σa = Σb` per problem.
/// - A zero mass marks padding: problems of different sizes share one call. The plan is exactly
///   0 on padded rows and columns, and padded cost entries are never read (they may hold
///   anything, NaN included).
/// - Gradients flow to `cost`, `a` and `b` as [`SinkhornConfig::gradient`] says.
/// - f32 and f64 are solved in their dtype; bf16 and f16 inputs are solved in f32 and the
///   results come back in their dtype (an error if one exceeds f16's range). Implicit
///   gradients are computed in f32 too and returned in f16 as they are: an entry beyond its
///   range (large costs over a small ε) becomes infinite, as in any f16 backward.
///
/// Equals POT's `ot.sinkhorn(a, b, M, reg=ε, method="sinkhorn_log")` per problem.
///
/// # Errors
/// [`OtprefError`] on mismatched shapes, negative or non-finite masses, a problem without mass,
/// unequal totals, ε <= 0, NaN/Inf in the valid part of the cost, or f16 results beyond its
/// range.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use otpref::{sinkhorn, SinkhornConfig};
///
/// let device = Default::default();
/// let cost = Tensor::<Flex, 3>::from_floats([[[0.0, 1.0], [1.0, 0.0]]], &device);
/// let a = Tensor::<Flex, 2>::from_floats([[0.5, 0.5]], &device);
/// let b = Tensor::<Flex, 2>::from_floats([[0.5, 0.5]], &device);
/// let transport = sinkhorn(cost, a, b, &SinkhornConfig::new(0.1))?;
/// let row_sums = transport.plan.sum_dim(2).into_data().to_vec::<f32>().unwrap();
/// assert!((row_sums[0] - 0.5).abs() < 1e-5);
/// # Ok::<(), otpref::OtprefError>(())
/// ```
pub fn sinkhorn<B: OtBackend>(
    cost: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    config: &SinkhornConfig,
) -> Result<Transport<B>, OtprefError> {
    solve_with_gradient(cost, a, b, &UnbalancedConfig::from(config))
}

/// Solves a batch of unbalanced entropic OT problems (KL-relaxed marginals) in the log domain.
///
/// ```text
/// min_{P >= 0} <P, C> + ε Σ P (log P - 1) + ρ_a KL(P1 | a) + ρ_b KL(Pᵀ1 | b)
/// f_i = λ_a (ε log a_i - ε LSE_j((g_j - C_ij)/ε)),   λ_a = ρ_a / (ρ_a + ε)
/// g_j = λ_b (ε log b_j - ε LSE_i((f_i - C_ij)/ε)),   λ_b = ρ_b / (ρ_b + ε)
/// ```
///
/// Shapes, padding and gradients as in [`sinkhorn`]; totals of `a` and `b` may differ.
/// `rho = f64::INFINITY` makes that side exact. Equals POT's
/// `ot.unbalanced.sinkhorn_unbalanced(a, b, M, reg=ε, reg_m=(ρ_a, ρ_b), reg_type="entropy")`,
/// and stays stable for small ε where POT's kernel-domain solvers underflow.
///
/// # Errors
/// As [`sinkhorn`], plus ρ <= 0 (totals are not compared).
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use otpref::{unbalanced_sinkhorn, UnbalancedConfig};
///
/// let device = Default::default();
/// let cost = Tensor::<Flex, 3>::from_floats([[[0.0, 1.0], [1.0, 0.0]]], &device);
/// let a = Tensor::<Flex, 2>::from_floats([[0.5, 0.5]], &device);
/// let b = Tensor::<Flex, 2>::from_floats([[0.5, 0.5]], &device);
/// let transport = unbalanced_sinkhorn(cost, a, b, &UnbalancedConfig::new(1.0, 1.0, 1.0))?;
/// let plan = transport.plan.into_data().to_vec::<f32>().unwrap();
/// // POT: plan[0][0] = 0.5112281426, plan[0][1] = 0.1880703234.
/// assert!((plan[0] - 0.5112281).abs() < 1e-5 && (plan[1] - 0.1880703).abs() < 1e-5);
/// # Ok::<(), otpref::OtprefError>(())
/// ```
pub fn unbalanced_sinkhorn<B: OtBackend>(
    cost: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    config: &UnbalancedConfig,
) -> Result<Transport<B>, OtprefError> {
    solve_with_gradient(cost, a, b, config)
}

fn solve_with_gradient<B: OtBackend>(
    cost: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    config: &UnbalancedConfig,
) -> Result<Transport<B>, OtprefError> {
    config.validate()?;
    match config.gradient {
        GradientMode::Detach => solver::solve(cost.detach(), a.detach(), b.detach(), config),
        GradientMode::Unrolled => solver::solve(cost, a, b, config),
        GradientMode::Implicit => B::solve_implicit::<implicit::Implicit>(cost, a, b, config),
    }
}
