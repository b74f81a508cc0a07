//! What a backend can do for the solvers: [`OtBackend`], its capabilities (host memory,
//! one-pass reductions, `reduce_lines`) and its forwarding through `Autodiff<B>`; the test of
//! whether the fused CPU solver serves a solve.
//!
//! The implicit backward is a custom autodiff operation defined above the solvers
//! (`implicit.rs`); the trait reaches it through [`ImplicitSolve`], so that imports run one
//! way: backends → solvers → implicit backward, as burn splits `Backend` and
//! `AutodiffBackend`.

use burn::backend::autodiff::{checkpoint::strategy::CheckpointStrategy, Autodiff};
use burn::tensor::{backend::Backend, DType, Tensor};

use super::config::{GradientMode, UnbalancedConfig};
use super::reductions::{self, Axis, Reduction};
use super::transport::Transport;
use crate::error::OtprefError;

/// Backends on which [`GradientMode::Implicit`](super::GradientMode::Implicit) is available.
///
/// This is burn's backend-extension pattern: the implicit backward is a custom autodiff
/// operation, registered by the impl of this trait for [`Autodiff<B>`]. On a backend without
/// autodiff there is no graph, and the implicit solve is a plain solve.
///
/// Implemented for `Flex` (feature `flex`), `Cuda` (feature `cuda`) and `Autodiff<B>` of any of
/// them. Adding a backend is one line in `src/sinkhorn/backends.rs`, e.g.
/// `impl OtBackend for burn::backend::Wgpu {}` behind its cargo feature: the default methods
/// work on any backend, and the `Autodiff` impl picks them up.
pub trait OtBackend: Backend {
    /// Whether this backend's tensors live in host memory, so that the fused CPU solver
    /// ([`UnbalancedConfig::fast_paths`]) serves it: `true` for `Flex` and `NdArray`;
    /// `Autodiff<B>` inherits it from `B`.
    const HOST_MEMORY: bool = false;

    /// Whether [`Self::reduce_lines`] is a single kernel that reads the matrix once
    /// (`CubeBackend`: CUDA, ROCm, wgpu), so that the solver evaluates every update as a
    /// log-sum-exp (see [`UnbalancedConfig::matmul_updates`]). `false` by default;
    /// `Autodiff<B>` inherits it from `B` (its tracked operands, in the unrolled mode, compose
    /// ops instead).
    const ONE_PASS_REDUCTIONS: bool = false;

    /// Reduces every row of `matrix` `[batch, n, m]` against `weights` `[batch, m]`
    /// ([`Axis::Rows`], result `[batch, n]`), or every column against `weights` `[batch, n]`
    /// ([`Axis::Columns`], result `[batch, m]`):
    /// - [`Reduction::LogSumExp`]: `log Σ_j exp(M[p, i, j] + w[p, j])` per row (over `i` per
    ///   column), the log-sum-exp of every Sinkhorn update;
    /// - [`Reduction::WeightedSum`]: `Σ_j M[p, i, j] w[p, j]` per row (over `i` per column),
    ///   the batched matrix-vector products of the implicit backward.
    ///
    /// Composed from burn's tensor ops by default; one kernel on `CubeBackend`. Weights of
    /// another shape or dtype are an error.
    fn reduce_lines(
        matrix: Tensor<Self, 3>,
        weights: Tensor<Self, 2>,
        axis: Axis,
        reduction: Reduction,
    ) -> Result<Tensor<Self, 2>, OtprefError> {
        reductions::check_operands(&matrix, &weights, axis)?;
        Ok(reductions::composed(matrix, weights, axis, reduction))
    }

    /// Solves the batch and, on an autodiff backend, attaches the implicit backward that
    /// `S` provides (the custom backward lives above the backends, as burn's autodiff sits
    /// above `Backend`).
    ///
    /// Called by [`sinkhorn`](crate::sinkhorn()) and
    /// [`unbalanced_sinkhorn`](crate::unbalanced_sinkhorn()); use those instead.
    #[doc(hidden)]
    fn solve_implicit<S: ImplicitSolve>(
        cost: Tensor<Self, 3>,
        a: Tensor<Self, 2>,
        b: Tensor<Self, 2>,
        config: &UnbalancedConfig,
    ) -> Result<Transport<Self>, OtprefError> {
        S::plain(cost, a, b, config)
    }
}

impl<B: OtBackend, C: CheckpointStrategy> OtBackend for Autodiff<B, C> {
    const HOST_MEMORY: bool = B::HOST_MEMORY;
    const ONE_PASS_REDUCTIONS: bool = B::ONE_PASS_REDUCTIONS;

    /// Untracked operands (detached solves, OTPO's marginals) are reduced by the inner
    /// backend, on its kernels; tracked ones by composed ops, which the graph records.
    fn reduce_lines(
        matrix: Tensor<Self, 3>,
        weights: Tensor<Self, 2>,
        axis: Axis,
        reduction: Reduction,
    ) -> Result<Tensor<Self, 2>, OtprefError> {
        reductions::check_operands(&matrix, &weights, axis)?;
        if matrix.is_require_grad() || weights.is_require_grad() {
            return Ok(reductions::composed(matrix, weights, axis, reduction));
        }
        B::reduce_lines(matrix.inner(), weights.inner(), axis, reduction).map(Tensor::from_inner)
    }

    fn solve_implicit<S: ImplicitSolve>(
        cost: Tensor<Self, 3>,
        a: Tensor<Self, 2>,
        b: Tensor<Self, 2>,
        config: &UnbalancedConfig,
    ) -> Result<Transport<Self>, OtprefError> {
        S::tracked::<B, C>(cost, a, b, config)
    }
}

/// Whether the fused CPU solver serves this solve: it is built (feature `fused-cpu`), the
/// backend's tensors live in host memory, the config allows it, no graph is to be recorded,
/// and the dtype is one it computes exactly enough (f64 stays with the reference, which
/// computes in f64).
pub(crate) fn fused_serves<B: OtBackend>(config: &UnbalancedConfig, dtype: DType) -> bool {
    cfg!(feature = "fused-cpu")
        && B::HOST_MEMORY
        && config.fast_paths
        && config.gradient != GradientMode::Unrolled
        && matches!(dtype, DType::F32 | DType::BF16 | DType::F16)
}

/// [`OtBackend::reduce_lines`] when `fast` and the backend has one-pass kernels, else the
/// composed ops (the reference). For the solver's own operands, which always fit.
pub(crate) fn reduce_on<B: OtBackend>(
    fast: bool,
    matrix: Tensor<B, 3>,
    weights: Tensor<B, 2>,
    axis: Axis,
    reduction: Reduction,
) -> Tensor<B, 2> {
    if fast && B::ONE_PASS_REDUCTIONS {
        B::reduce_lines(matrix, weights, axis, reduction).expect("the solver's operands fit")
    } else {
        reductions::composed(matrix, weights, axis, reduction)
    }
}

/// The solve behind [`OtBackend::solve_implicit`]: a plain solve without autodiff, and on
/// `Autodiff<B>` a solve on `B` with the implicit backward attached. Implemented once, by the
/// implicit backward's module.
#[doc(hidden)]
pub trait ImplicitSolve {
    /// Solves on a backend without autodiff (no graph to attach a backward to).
    fn plain<B: OtBackend>(
        cost: Tensor<B, 3>,
        a: Tensor<B, 2>,
        b: Tensor<B, 2>,
        config: &UnbalancedConfig,
    ) -> Result<Transport<B>, OtprefError>;

    /// Solves on `B` and records the implicit backward on `Autodiff<B, C>`'s graph.
    fn tracked<B: OtBackend, C: CheckpointStrategy>(
        cost: Tensor<Autodiff<B, C>, 3>,
        a: Tensor<Autodiff<B, C>, 2>,
        b: Tensor<Autodiff<B, C>, 2>,
        config: &UnbalancedConfig,
    ) -> Result<Transport<Autodiff<B, C>>, OtprefError>;
}
