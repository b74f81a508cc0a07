//! Implicit differentiation of the Sinkhorn fixed point, as a custom autodiff backward.
//!
//! At the fixed point, with `x = f/ε`, `y = g/ε`, `p = P1`, `q = Pᵀ1` and `α = 1/λ = 1 + ε/ρ`,
//! the first-order conditions scaled by `p` and `q` have the symmetric Jacobian
//!
//! ```text
//! H = [[α_a diag(p), P], [Pᵀ, α_b diag(q)]]
//! ```
//!
//! For upstream gradients `G_P`, `G_f`, `G_g` the backward solves `H [w_x; w_y] = [u_x; u_y]`
//! with `u_x = (G_P ⊙ P)1 + ε G_f`, `u_y = (G_P ⊙ P)ᵀ1 + ε G_g`, and returns
//!
//! ```text
//! ∂L/∂C = P ⊙ (w_x ⊕ w_y - G_P) / ε,   ∂L/∂a = w_x p / a,   ∂L/∂b = w_y q / b.
//! ```
//!
//! The system is solved by conjugate gradients on its Jacobi-scaled Schur complement, batched,
//! so the backward's memory is a few `[batch, n, m]` tensors whatever the iteration count.
//! In the balanced problem `H` is singular along `(1, -1)` (potentials are defined up to a
//! constant shift); the minimum-norm solution is used, so `∂L/∂a` and `∂L/∂b` are defined up
//! to opposite constants, as only mass changes that keep `Σa = Σb` are possible.

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
    Autodiff,
};
use burn::tensor::{backend::Backend, DType, Tensor, TensorPrimitive};

use super::config::UnbalancedConfig;
use super::reductions::{self, Axis, Reduction};
use super::solver::solve;
use super::transport::Transport;
use crate::checks::{narrowed, widened};
use crate::error::OtprefError;

/// Backends on which [`GradientMode::Implicit`](super::GradientMode::Implicit) is available.
///
/// This is burn's backend-extension pattern: the implicit backward is a custom autodiff
/// operation, registered by the impl of this trait for [`Autodiff<B>`]. On a backend without
/// autodiff there is no graph, and the implicit solve is a plain solve.
///
/// Implemented for `Flex` (feature `flex`), `Cuda` (feature `cuda`) and `Autodiff<B>` of any of
/// them. Adding a backend is one line in `src/sinkhorn/backends.rs`, e.g.
/// `impl OtBackend for burn::backend::Wgpu {}` behind its cargo feature: the default method
/// works on any backend, and the `Autodiff` impl picks it up.
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

    /// Solves the batch and, on an autodiff backend, attaches the implicit backward.
    ///
    /// Called by [`sinkhorn`](crate::sinkhorn()) and
    /// [`unbalanced_sinkhorn`](crate::unbalanced_sinkhorn()); use those instead.
    fn solve_implicit(
        cost: Tensor<Self, 3>,
        a: Tensor<Self, 2>,
        b: Tensor<Self, 2>,
        config: &UnbalancedConfig,
    ) -> Result<Transport<Self>, OtprefError> {
        solve(cost, a, b, config)
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

    fn solve_implicit(
        cost: Tensor<Self, 3>,
        a: Tensor<Self, 2>,
        b: Tensor<Self, 2>,
        config: &UnbalancedConfig,
    ) -> Result<Transport<Self>, OtprefError> {
        let cost = cost.into_primitive().tensor();
        let a = a.into_primitive().tensor();
        let b = b.into_primitive().tensor();
        let inner_a = inner::<B, 2>(a.primitive.clone());
        let inner_b = inner::<B, 2>(b.primitive.clone());
        let solved = solve(
            inner::<B, 3>(cost.primitive.clone()),
            inner_a.clone(),
            inner_b.clone(),
            config,
        )?;
        let [batch, n, m] = solved.plan.dims();
        let packed = pack(solved.plan.clone(), solved.f, solved.g)
            .into_primitive()
            .tensor();

        let state = ImplicitState {
            plan: solved.plan.into_primitive().tensor(),
            a: inner_a.into_primitive().tensor(),
            b: inner_b.into_primitive().tensor(),
            config: config.clone(),
        };
        let packed = match ImplicitBackward
            .prepare::<C>([cost.node.clone(), a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, packed),
            OpsKind::UnTracked(prep) => prep.finish(packed),
        };
        let packed = Tensor::<Self, 1>::from_primitive(TensorPrimitive::Float(packed));
        let (plan, f, g) = unpack(packed, [batch, n, m]);
        Ok(Transport {
            plan,
            f,
            g,
            iterations: solved.iterations,
            converged: solved.converged,
            marginal_error: solved.marginal_error,
        })
    }
}

fn inner<B: Backend, const D: usize>(primitive: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// burn's custom backward has one output, so plan, f and g travel as one flat tensor
/// (slicing routes all three gradients back to it). Flat and in this order, each part is a
/// contiguous run, so the slices are views that later ops read at full speed.
fn pack<B: Backend>(plan: Tensor<B, 3>, f: Tensor<B, 2>, g: Tensor<B, 2>) -> Tensor<B, 1> {
    Tensor::cat(
        vec![plan.flatten(0, 2), f.flatten(0, 1), g.flatten(0, 1)],
        0,
    )
}

/// The plan `[batch, n, m]`, `f` `[batch, n]` and `g` `[batch, m]` of [`pack`]'s output.
fn unpack<B: Backend>(
    packed: Tensor<B, 1>,
    [batch, n, m]: [usize; 3],
) -> (Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2>) {
    let (plan_end, f_end) = (batch * n * m, batch * n * (m + 1));
    (
        packed.clone().narrow(0, 0, plan_end).reshape([batch, n, m]),
        packed
            .clone()
            .narrow(0, plan_end, batch * n)
            .reshape([batch, n]),
        packed.narrow(0, f_end, batch * m).reshape([batch, m]),
    )
}

#[derive(Debug)]
struct ImplicitBackward;

#[derive(Debug, Clone)]
struct ImplicitState<B: Backend> {
    plan: B::FloatTensorPrimitive,
    a: B::FloatTensorPrimitive,
    b: B::FloatTensorPrimitive,
    config: UnbalancedConfig,
}

impl<B: OtBackend> Backward<B, 3> for ImplicitBackward {
    type State = ImplicitState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_cost, node_a, node_b] = ops.parents;
        let grad = inner::<B, 1>(grads.consume::<B>(&ops.node));
        let state = ops.state;
        let plan = inner::<B, 3>(state.plan);
        let vjp = host_or_composed_vjp(plan, inner(state.a), inner(state.b), grad, &state.config);
        for (node, grad) in [
            (node_cost, vjp.cost.into_primitive().tensor()),
            (node_a, vjp.a.into_primitive().tensor()),
            (node_b, vjp.b.into_primitive().tensor()),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// Gradients of the loss with respect to the solver's inputs.
pub(crate) struct InputGrads<B: Backend> {
    pub(crate) cost: Tensor<B, 3>,
    pub(crate) a: Tensor<B, 2>,
    pub(crate) b: Tensor<B, 2>,
}

/// Smallest row/column mass used as a divisor: keeps rows whose mass underflowed finite.
pub(crate) const TINY_MASS: f64 = 1e-30;

/// The vector-Jacobian product for the packed output's gradient `grad`: on the fused CPU
/// solver's backends and dtypes its host version, otherwise the composed one below.
fn host_or_composed_vjp<B: OtBackend>(
    plan: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    grad: Tensor<B, 1>,
    config: &UnbalancedConfig,
) -> InputGrads<B> {
    #[cfg(feature = "fused-cpu")]
    if super::fused::serves::<B>(config, plan.dtype()) {
        return super::fused::fixed_point_vjp(plan, a, b, grad, config);
    }
    // In f32 for half-precision inputs, as the forward; the gradients in the inputs' dtype.
    let dtype = plan.dtype();
    let (grad_plan, grad_f, grad_g) = unpack(widened(grad), plan.dims());
    let grads = fixed_point_vjp(
        widened(plan),
        widened(a),
        widened(b),
        grad_plan,
        grad_f,
        grad_g,
        config,
    );
    InputGrads {
        cost: narrowed(grads.cost, dtype),
        a: narrowed(grads.a, dtype),
        b: narrowed(grads.b, dtype),
    }
}

/// The vector-Jacobian product of the fixed point, see the module docs.
fn fixed_point_vjp<B: OtBackend>(
    plan: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    grad_plan: Tensor<B, 3>,
    grad_f: Tensor<B, 2>,
    grad_g: Tensor<B, 2>,
    config: &UnbalancedConfig,
) -> InputGrads<B> {
    let epsilon = config.epsilon;
    let pad_a = a.clone().lower_equal_elem(0.0);
    let pad_b = b.clone().lower_equal_elem(0.0);
    let weighted = grad_plan.clone() * plan.clone();
    let u_x = (weighted.clone().sum_dim(2).squeeze_dim::<2>(2) + grad_f.mul_scalar(epsilon))
        .mask_fill(pad_a.clone(), 0.0);
    let u_y = (weighted.sum_dim(1).squeeze_dim::<2>(1) + grad_g.mul_scalar(epsilon))
        .mask_fill(pad_b.clone(), 0.0);
    let p = plan
        .clone()
        .sum_dim(2)
        .squeeze_dim::<2>(2)
        .clamp_min(TINY_MASS);
    let q = plan
        .clone()
        .sum_dim(1)
        .squeeze_dim::<2>(1)
        .clamp_min(TINY_MASS);

    let (w_x, w_y) = solve_dual_hessian(&plan, &p, &q, u_x, u_y, &pad_a, config);

    let cost = (plan
        * (w_x.clone().unsqueeze_dim::<3>(2) + w_y.clone().unsqueeze_dim::<3>(1) - grad_plan))
        .div_scalar(epsilon);
    let a_grad = (w_x * p / a.mask_fill(pad_a.clone(), 1.0)).mask_fill(pad_a, 0.0);
    let b_grad = (w_y * q / b.mask_fill(pad_b.clone(), 1.0)).mask_fill(pad_b, 0.0);
    InputGrads {
        cost,
        a: a_grad,
        b: b_grad,
    }
}

/// Solves `H [w_x; w_y] = [u_x; u_y]` (see the module docs) for the whole batch.
///
/// Scaling by `D = diag(p, q)^{1/2}` turns `H` into `[[α_a I, A], [Aᵀ, α_b I]]` with
/// `A = D_p^{-1/2} P D_q^{-1/2}`, whose singular values are at most 1; eliminating `w_y`
/// leaves the positive semi-definite `S = α_a I - A Aᵀ / α_b` for conjugate gradients.
fn solve_dual_hessian<B: OtBackend>(
    plan: &Tensor<B, 3>,
    p: &Tensor<B, 2>,
    q: &Tensor<B, 2>,
    u_x: Tensor<B, 2>,
    u_y: Tensor<B, 2>,
    pad_a: &Tensor<B, 2, burn::tensor::Bool>,
    config: &UnbalancedConfig,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let alpha_a = 1.0 / config.lambda_a();
    let alpha_b = 1.0 / config.lambda_b();
    let sqrt_p = p.clone().sqrt();
    let sqrt_q = q.clone().sqrt();
    let scaled = plan.clone()
        / (sqrt_p.clone().unsqueeze_dim::<3>(2) * sqrt_q.clone().unsqueeze_dim::<3>(1));
    let fast = config.fast_paths;
    let product =
        |v, axis| reductions::reduce_on(fast, scaled.clone(), v, axis, Reduction::WeightedSum);
    let apply_a = |v| product(v, Axis::Rows);
    let apply_at = |v| product(v, Axis::Columns);

    let u_x = u_x / sqrt_p.clone();
    let u_y = u_y / sqrt_q.clone();
    let mut rhs = u_x - apply_a(u_y.clone()).div_scalar(alpha_b);

    // Balanced: S is singular along sqrt(p); keep everything orthogonal to it.
    let null_direction = config.is_balanced().then(|| {
        let v = sqrt_p.clone().mask_fill(pad_a.clone(), 0.0);
        let norm = v.clone().square().sum_dim(1).sqrt();
        v / norm
    });
    let project = |t: Tensor<B, 2>, v: &Option<Tensor<B, 2>>| match v {
        Some(v) => t.clone() - v.clone() * (t * v.clone()).sum_dim(1),
        None => t,
    };
    rhs = project(rhs, &null_direction);

    let apply_schur =
        |v: Tensor<B, 2>| v.clone().mul_scalar(alpha_a) - apply_a(apply_at(v)).div_scalar(alpha_b);
    let z = conjugate_gradients(apply_schur, rhs, config);
    let w_x_scaled = project(z, &null_direction);
    let w_y_scaled = (u_y - apply_at(w_x_scaled.clone())).div_scalar(alpha_b);
    (w_x_scaled / sqrt_p, w_y_scaled / sqrt_q)
}

/// Batched conjugate gradients for `S z = rhs`, one system per row of `rhs`.
///
/// A system stops for good (its steps become 0) once its residual is below
/// `implicit_tolerance * |rhs|`, or when rounding makes the curvature non-positive: `S` is
/// only positive semi-definite, and a step along a null direction would blow up.
fn conjugate_gradients<B: Backend>(
    apply: impl Fn(Tensor<B, 2>) -> Tensor<B, 2>,
    rhs: Tensor<B, 2>,
    config: &UnbalancedConfig,
) -> Tensor<B, 2> {
    const TINY: f64 = 1e-30;
    const CHECK_EVERY: usize = 10;
    let tolerance = config.implicit_tolerance.max(rounding_floor(rhs.dtype()));
    let mut rr = rhs.clone().square().sum_dim(1);
    let threshold = rr.clone().mul_scalar(tolerance * tolerance);
    let mut z = rhs.zeros_like();
    let mut residual = rhs.clone();
    let mut direction = rhs;
    // Once stopped, a system stays stopped (a direction reset to the residual could show
    // positive curvature again and restart it).
    let mut stopped = rr.clone().lower_elem(0.0);
    for iteration in 1..=config.implicit_max_iters {
        let s_direction = apply(direction.clone());
        let curvature = (direction.clone() * s_direction.clone()).sum_dim(1);
        stopped = stopped
            .bool_or(rr.clone().lower_equal(threshold.clone()))
            .bool_or(curvature.clone().lower_equal_elem(0.0));
        if iteration % CHECK_EVERY == 0
            && stopped.clone().all().into_data().iter::<bool>().all(|d| d)
        {
            break;
        }
        let step = (rr.clone() / curvature.clamp_min(TINY)).mask_fill(stopped.clone(), 0.0);
        z = z + direction.clone() * step.clone();
        residual = residual - s_direction * step;
        let rr_new = residual.clone().square().sum_dim(1);
        let beta = (rr_new.clone() / rr.clamp_min(TINY)).mask_fill(stopped.clone(), 0.0);
        direction = residual.clone() + direction * beta;
        rr = rr_new;
    }
    z
}

/// Relative residual below which rounding, not the solver, sets the error.
fn rounding_floor(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-13,
        DType::F32 | DType::Flex32 => 1e-6,
        _ => 1e-3,
    }
}
