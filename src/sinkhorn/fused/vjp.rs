//! The implicit backward's fixed-point vector-Jacobian product on host memory: step for step
//! `fixed_point_vjp` in `adjoint.rs` (the reference, whose module docs derive it), with each
//! plan-vector product one pass over the plan and the problems of a batch in parallel.
//!
//! Per problem: one pass for the plan's row and column sums (plain and weighted by the
//! upstream gradient), one for the right-hand side (`A u_y`), two per conjugate-gradient
//! iteration (`Aᵀv`, then `A(Aᵀv)`), one for `w_y` (`Aᵀw_x`) and one writing the cost's
//! gradient over the plan. The plan is never rescaled into a
//! second matrix: `A = D_p^{-1/2} P D_q^{-1/2}` is applied by scaling the vectors. A large
//! problem splits its rows over threads in every pass, as the forward does.

use burn::tensor::{backend::Backend, Tensor};
use rayon::prelude::*;

use super::rows::{self, for_row_chunks, sum_over_rows, Combine};
use super::{kernels, to_device, HostBuffer};
use crate::host::to_host;
use crate::sinkhorn::adjoint::{rounding_floor, InputGrads, TINY_MASS};
use crate::sinkhorn::config::UnbalancedConfig;

/// The loss's gradients with respect to the solver's outputs, flat on the host.
struct Upstream<'a> {
    plan: &'a [f32],
    f: &'a [f32],
    g: &'a [f32],
}

/// The host counterpart of `adjoint::fixed_point_vjp`. `upstream` is the gradient of the
/// packed output: the plan's `[batch, n, m]`, then `f`'s `[batch, n]`, then `g`'s `[batch, m]`,
/// flat. f16/bf16 inputs are computed in f32 and the gradients come back in their dtype.
pub(crate) fn fixed_point_vjp<B: Backend>(
    plan: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    upstream: Tensor<B, 1>,
    config: &UnbalancedConfig,
) -> InputGrads<B> {
    let (device, dtype) = (plan.device(), plan.dtype());
    let [batch, n, m] = plan.dims();
    let mut plan = HostBuffer::new(plan);
    let mut upstream = HostBuffer::new(upstream);
    let host = |masses: Tensor<B, 2>| -> Vec<f32> {
        to_host(masses).into_iter().map(|v| v as f32).collect()
    };
    let (a, b) = (host(a), host(b));

    let upstream = upstream.values();
    let (upstream_plan, rest) = upstream.split_at(batch * n * m);
    let (upstream_f, upstream_g) = rest.split_at(batch * n);
    let mass_grads: Vec<(Vec<f32>, Vec<f32>)> = plan
        .values()
        .par_chunks_mut(n * m)
        .enumerate()
        .map(|(k, plan)| {
            let upstream = Upstream {
                plan: &upstream_plan[k * n * m..(k + 1) * n * m],
                f: &upstream_f[k * n..(k + 1) * n],
                g: &upstream_g[k * m..(k + 1) * m],
            };
            let (a, b) = (&a[k * n..(k + 1) * n], &b[k * m..(k + 1) * m]);
            problem_vjp(plan, upstream, a, b, config)
        })
        .collect();
    let (a_grad, b_grad): (Vec<Vec<f32>>, Vec<Vec<f32>>) = mass_grads.into_iter().unzip();
    InputGrads {
        cost: plan.into_tensor(dtype, &device),
        a: to_device(a_grad.concat(), [batch, n], dtype, &device),
        b: to_device(b_grad.concat(), [batch, m], dtype, &device),
    }
}

/// One problem's vector-Jacobian product. Overwrites `plan` (`[n, m]`) with the gradient
/// with respect to the cost and returns the gradients with respect to `a` and `b`.
fn problem_vjp(
    plan: &mut [f32],
    upstream: Upstream<'_>,
    a: &[f32],
    b: &[f32],
    config: &UnbalancedConfig,
) -> (Vec<f32>, Vec<f32>) {
    let (n, m) = (a.len(), b.len());
    let epsilon = config.epsilon as f32;
    let parallel = rows::split(n * m);
    let (mut p, mut u_x, mut q, mut u_y) = plan_sums(plan, upstream.plan, m, parallel);
    add_dual_gradient(&mut u_x, upstream.f, a, epsilon);
    add_dual_gradient(&mut u_y, upstream.g, b, epsilon);
    let tiny = TINY_MASS as f32;
    p.iter_mut()
        .chain(&mut q)
        .for_each(|mass| *mass = mass.max(tiny));

    let system = ScaledPlan::new(plan, &p, &q, parallel);
    let (alpha_a, alpha_b) = (
        (1.0 / config.lambda_a()) as f32,
        (1.0 / config.lambda_b()) as f32,
    );
    let u_x = divided(&u_x, &system.sqrt_p);
    let u_y = divided(&u_y, &system.sqrt_q);
    let mut rhs = system.apply(&u_y);
    rhs.iter_mut()
        .zip(&u_x)
        .for_each(|(r, u)| *r = u - *r / alpha_b);

    // Balanced: the Schur complement is singular along sqrt(p); keep everything orthogonal.
    let null_direction = config.is_balanced().then(|| {
        let v: Vec<f32> = system
            .sqrt_p
            .iter()
            .zip(a)
            .map(|(s, a)| if *a <= 0.0 { 0.0 } else { *s })
            .collect();
        let norm = dot(&v, &v).sqrt() as f32;
        v.iter().map(|v| v / norm).collect::<Vec<f32>>()
    });
    let project = |t: &mut [f32]| {
        if let Some(v) = &null_direction {
            let along = dot(t, v) as f32;
            t.iter_mut().zip(v).for_each(|(t, v)| *t -= v * along);
        }
    };
    project(&mut rhs);

    let apply_schur = |v: &[f32]| {
        let mut out = system.apply(&system.apply_transpose(v));
        out.iter_mut()
            .zip(v)
            .for_each(|(o, v)| *o = v * alpha_a - *o / alpha_b);
        out
    };
    let mut w_x = conjugate_gradients(apply_schur, rhs, config);
    project(&mut w_x);
    let mut w_y = system.apply_transpose(&w_x);
    w_y.iter_mut()
        .zip(&u_y)
        .for_each(|(w, u)| *w = (u - *w) / alpha_b);
    let w_x = divided(&w_x, &system.sqrt_p);
    let w_y = divided(&w_y, &system.sqrt_q);

    for_row_chunks(plan, m, m, parallel, |first, block| {
        let grad = &upstream.plan[first * m..first * m + block.len()];
        kernels::cost_gradient_in_place(block, grad, m, &w_x[first..], &w_y, epsilon)
    });
    (mass_gradient(&w_x, &p, a), mass_gradient(&w_y, &q, b))
}

/// The plan's row sums `P1` and `(G ⊙ P)1`, and column sums `Pᵀ1` and `(G ⊙ P)ᵀ1`, in one
/// pass over plan `P` and upstream gradient `G` (`[n, m]`).
fn plan_sums(
    plan: &[f32],
    grad: &[f32],
    m: usize,
    parallel: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = plan.len() / m.max(1);
    let (mut p, mut u_x) = (vec![0.0; n], vec![0.0; n]);
    // Rows `first..first + p.len()` into their slices of `p` and `u_x`; the column sums
    // returned as one accumulator `[Pᵀ1, (G ⊙ P)ᵀ1]`.
    let block = |first: usize, p: &mut [f32], u_x: &mut [f32]| {
        let entries = first * m..(first + p.len()) * m;
        let mut columns = vec![0.0; 2 * m];
        let (q, u_y) = columns.split_at_mut(m);
        kernels::plan_sums(&plan[entries.clone()], &grad[entries], m, p, u_x, q, u_y);
        columns
    };
    let mut columns = if parallel {
        let per_task = rows::rows_per_task(m);
        p.par_chunks_mut(per_task)
            .zip(u_x.par_chunks_mut(per_task))
            .enumerate()
            .map(|(k, (p, u_x))| block(k * per_task, p, u_x))
            .reduce_with(|mut acc, other| {
                Combine::Add.apply(&mut acc, &other);
                acc
            })
            .unwrap_or_else(|| vec![0.0; 2 * m])
    } else {
        block(0, &mut p, &mut u_x)
    };
    let u_y = columns.split_off(m);
    (p, u_x, columns, u_y)
}

/// `u += ε G` for the dual potential's upstream gradient `G`, and 0 at padded entries.
fn add_dual_gradient(u: &mut [f32], upstream: &[f32], mass: &[f32], epsilon: f32) {
    for ((u, g), mass) in u.iter_mut().zip(upstream).zip(mass) {
        *u = if *mass <= 0.0 { 0.0 } else { *u + g * epsilon };
    }
}

/// `∂L/∂a = w p / a` (0 at padded entries).
fn mass_gradient(w: &[f32], marginal: &[f32], mass: &[f32]) -> Vec<f32> {
    w.iter()
        .zip(marginal)
        .zip(mass)
        .map(|((w, p), mass)| if *mass <= 0.0 { 0.0 } else { w * p / mass })
        .collect()
}

/// `A = D_p^{-1/2} P D_q^{-1/2}`, applied through the plan `P` in one pass per product.
struct ScaledPlan<'a> {
    plan: &'a [f32],
    sqrt_p: Vec<f32>,
    sqrt_q: Vec<f32>,
    /// Split rows over threads.
    parallel: bool,
}

impl<'a> ScaledPlan<'a> {
    fn new(plan: &'a [f32], p: &[f32], q: &[f32], parallel: bool) -> Self {
        let sqrt = |v: &[f32]| v.iter().map(|v| v.sqrt()).collect();
        Self {
            plan,
            sqrt_p: sqrt(p),
            sqrt_q: sqrt(q),
            parallel,
        }
    }

    /// `A v`, for `v` of length `m`.
    fn apply(&self, v: &[f32]) -> Vec<f32> {
        let (n, m) = (self.sqrt_p.len(), self.sqrt_q.len());
        let scaled = divided(v, &self.sqrt_q);
        let mut out = vec![0.0; n];
        for_row_chunks(&mut out, 1, m, self.parallel, |first, out| {
            let rows = &self.plan[first * m..(first + out.len()) * m];
            kernels::dots(rows, m, &scaled, out)
        });
        out.iter_mut().zip(&self.sqrt_p).for_each(|(o, s)| *o /= s);
        out
    }

    /// `Aᵀ v`, for `v` of length `n`.
    fn apply_transpose(&self, v: &[f32]) -> Vec<f32> {
        let (n, m) = (self.sqrt_p.len(), self.sqrt_q.len());
        let scaled = divided(v, &self.sqrt_p);
        let mut out = sum_over_rows(n, m, self.parallel, 0.0, Combine::Add, |rows, acc| {
            let block = &self.plan[rows.start * m..rows.end * m];
            kernels::add_scaled_rows(block, m, &scaled[rows], acc)
        });
        out.iter_mut().zip(&self.sqrt_q).for_each(|(o, s)| *o /= s);
        out
    }
}

/// `v_i / d_i`.
fn divided(v: &[f32], d: &[f32]) -> Vec<f32> {
    v.iter().zip(d).map(|(v, d)| v / d).collect()
}

/// `Σ_i a_i b_i`, accumulated in f64 (the conjugate gradients' scalars).
fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Conjugate gradients for `S z = rhs`, as `adjoint::conjugate_gradients` for one system: it
/// stops once the residual is below `implicit_tolerance * |rhs|` (at least f32's rounding
/// floor), or when rounding makes the curvature non-positive.
fn conjugate_gradients(
    apply: impl Fn(&[f32]) -> Vec<f32>,
    rhs: Vec<f32>,
    config: &UnbalancedConfig,
) -> Vec<f32> {
    const TINY: f64 = TINY_MASS;
    let tolerance = config
        .implicit_tolerance
        .max(rounding_floor(burn::tensor::DType::F32));
    let mut rr = dot(&rhs, &rhs);
    let threshold = rr * tolerance * tolerance;
    let mut z = vec![0.0; rhs.len()];
    let mut residual = rhs.clone();
    let mut direction = rhs;
    for _ in 0..config.implicit_max_iters {
        if rr <= threshold {
            break;
        }
        let s_direction = apply(&direction);
        let curvature = dot(&direction, &s_direction);
        if curvature <= 0.0 {
            break;
        }
        let step = (rr / curvature) as f32;
        z.iter_mut()
            .zip(&direction)
            .for_each(|(z, d)| *z += step * d);
        residual
            .iter_mut()
            .zip(&s_direction)
            .for_each(|(r, s)| *r -= step * s);
        let rr_new = dot(&residual, &residual);
        let beta = (rr_new / rr.max(TINY)) as f32;
        direction
            .iter_mut()
            .zip(&residual)
            .for_each(|(d, r)| *d = r + beta * *d);
        rr = rr_new;
    }
    z
}
