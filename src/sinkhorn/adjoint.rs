//! The reference backward of the Sinkhorn fixed point (composed tensor ops, any backend): the
//! vector-Jacobian product that the implicit mode's custom backward (`implicit.rs`) returns.
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

use burn::tensor::{backend::Backend, DType, Tensor};

use super::backend::{reduce_on, OtBackend};
use super::config::UnbalancedConfig;
use super::reductions::{Axis, Reduction};

/// Gradients of the loss with respect to the solver's inputs.
pub(crate) struct InputGrads<B: Backend> {
    pub(crate) cost: Tensor<B, 3>,
    pub(crate) a: Tensor<B, 2>,
    pub(crate) b: Tensor<B, 2>,
}

/// Smallest row/column mass used as a divisor: keeps rows whose mass underflowed finite.
pub(crate) const TINY_MASS: f64 = 1e-30;

/// The vector-Jacobian product of the fixed point, see the module docs.
pub(super) fn fixed_point_vjp<B: OtBackend>(
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
    let product = |v, axis| reduce_on(fast, scaled.clone(), v, axis, Reduction::WeightedSum);
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
    const TINY: f64 = TINY_MASS;
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
pub(crate) fn rounding_floor(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-13,
        DType::F32 | DType::Flex32 => 1e-6,
        _ => 1e-3,
    }
}
