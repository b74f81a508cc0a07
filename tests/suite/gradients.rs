//! Gradient checks of the three gradient modes against central finite differences (f64).
//!
//! The loss mixes the plan and both potentials, `L = Σ W ⊙ P + Σ v ⊙ f + Σ w ⊙ g`, and the
//! check compares directional derivatives `<∇L, D>` with `(L(θ + hD) - L(θ - hD)) / 2h` along
//! random directions of the cost and the masses (mass directions keep the totals of balanced
//! problems equal, the only feasible ones there).

use crate::common::{pad_batch, random_problem, tensor, values, Problem, Rng, TestAutodiff};
use burn::tensor::{DType, Tensor};
use otpref::{unbalanced_sinkhorn, GradientMode, UnbalancedConfig};

const H: f64 = 1e-6;

struct Setup {
    problems: Vec<Problem>,
    plan_weights: Vec<f64>,
    f_weights: Vec<f64>,
    g_weights: Vec<f64>,
    shape: [usize; 3],
}

fn setup(seed: u64, balanced: bool) -> Setup {
    let mut rng = Rng(seed);
    let problems = vec![
        random_problem(&mut rng, 3, 4, balanced),
        random_problem(&mut rng, 4, 2, balanced),
    ];
    let shape = [2, 4, 4];
    let plan_weights = rng.vec(32, -1.0, 1.0);
    let mut f_weights = rng.vec(8, -1.0, 1.0);
    let mut g_weights = rng.vec(8, -1.0, 1.0);
    if balanced {
        // Potentials are defined up to f + t, g - t: only a loss with Σv = Σw over the valid
        // entries is well defined. Padded entries get weight too (their potentials are 0).
        for (k, p) in problems.iter().enumerate() {
            let sum_f: f64 = f_weights[k * 4..k * 4 + p.n].iter().sum();
            let sum_g: f64 = g_weights[k * 4..k * 4 + p.m - 1].iter().sum();
            g_weights[k * 4 + p.m - 1] = sum_f - sum_g;
        }
    } else {
        f_weights.iter_mut().for_each(|v| *v *= 0.5);
        g_weights.iter_mut().for_each(|v| *v *= 0.5);
    }
    Setup {
        problems,
        plan_weights,
        f_weights,
        g_weights,
        shape,
    }
}

fn config(balanced: bool, gradient: GradientMode) -> UnbalancedConfig {
    config_with(balanced, gradient, true)
}

fn config_with(balanced: bool, gradient: GradientMode, matmul_updates: bool) -> UnbalancedConfig {
    let (rho_a, rho_b) = if balanced {
        (f64::INFINITY, f64::INFINITY)
    } else {
        (0.7, 2.0)
    };
    UnbalancedConfig::new(0.3, rho_a, rho_b)
        .with_max_iters(20_000)
        .with_tolerance(1e-13)
        .with_check_every(5)
        .with_implicit_tolerance(1e-12)
        .with_gradient(gradient)
        .with_matmul_updates(matmul_updates)
}

type Inputs = (
    Tensor<TestAutodiff, 3>,
    Tensor<TestAutodiff, 2>,
    Tensor<TestAutodiff, 2>,
);

fn loss(setup: &Setup, inputs: Inputs, config: &UnbalancedConfig) -> Tensor<TestAutodiff, 1> {
    let [batch, n, m] = setup.shape;
    let (cost, a, b) = inputs;
    let t = unbalanced_sinkhorn(cost, a, b, config).unwrap();
    assert!(t.all_converged());
    let w = tensor::<TestAutodiff, 3>(setup.plan_weights.clone(), [batch, n, m], DType::F64);
    let v = tensor::<TestAutodiff, 2>(setup.f_weights.clone(), [batch, n], DType::F64);
    let u = tensor::<TestAutodiff, 2>(setup.g_weights.clone(), [batch, m], DType::F64);
    (t.plan * w).sum() + (t.f * v).sum() + (t.g * u).sum()
}

fn inputs(setup: &Setup) -> Inputs {
    pad_batch::<TestAutodiff>(&setup.problems, 0.0, DType::F64)
}

fn shifted(setup: &Setup, dirs: &[Vec<f64>; 3], h: f64) -> Inputs {
    let [batch, n, m] = setup.shape;
    let (cost, a, b) = inputs(setup);
    let step = |t: Vec<f64>, d: &Vec<f64>| -> Vec<f64> {
        t.iter().zip(d).map(|(x, d)| x + h * d).collect()
    };
    (
        tensor(step(values(cost), &dirs[0]), [batch, n, m], DType::F64),
        tensor(step(values(a), &dirs[1]), [batch, n], DType::F64),
        tensor(step(values(b), &dirs[2]), [batch, m], DType::F64),
    )
}

/// Random directions that only touch valid entries; mass directions sum to zero per problem
/// when balanced.
fn directions(setup: &Setup, rng: &mut Rng, balanced: bool) -> [Vec<f64>; 3] {
    let [batch, n, m] = setup.shape;
    let mut dc = vec![0.0; batch * n * m];
    let mut da = vec![0.0; batch * n];
    let mut db = vec![0.0; batch * m];
    for (k, p) in setup.problems.iter().enumerate() {
        for i in 0..p.n {
            for j in 0..p.m {
                dc[(k * n + i) * m + j] = rng.next_f64() - 0.5;
            }
            da[k * n + i] = rng.next_f64() - 0.5;
        }
        for j in 0..p.m {
            db[k * m + j] = rng.next_f64() - 0.5;
        }
        if balanced {
            let mean_a: f64 = da[k * n..k * n + p.n].iter().sum::<f64>() / p.n as f64;
            let mean_b: f64 = db[k * m..k * m + p.m].iter().sum::<f64>() / p.m as f64;
            da[k * n..k * n + p.n].iter_mut().for_each(|v| *v -= mean_a);
            db[k * m..k * m + p.m].iter_mut().for_each(|v| *v -= mean_b);
        }
    }
    [dc, da, db]
}

fn dot(x: &[f64], y: &[f64]) -> f64 {
    x.iter().zip(y).map(|(a, b)| a * b).sum()
}

fn check_mode(balanced: bool, mode: GradientMode, seed: u64) {
    check_mode_with(balanced, mode, seed, true);
}

fn check_mode_with(balanced: bool, mode: GradientMode, seed: u64, matmul_updates: bool) {
    let setup = setup(seed, balanced);
    let config = config_with(balanced, mode, matmul_updates);
    let (cost, a, b) = inputs(&setup);
    let (cost, a, b) = (cost.require_grad(), a.require_grad(), b.require_grad());
    let grads = loss(&setup, (cost.clone(), a.clone(), b.clone()), &config).backward();
    let grad_cost = values(cost.grad(&grads).unwrap());
    let grad_a = values(a.grad(&grads).unwrap());
    let grad_b = values(b.grad(&grads).unwrap());
    for g in grad_cost.iter().chain(&grad_a).chain(&grad_b) {
        assert!(g.is_finite(), "{mode:?}: non-finite gradient");
    }
    // Padded cost entries (problem 0 has columns 4.., problem 1 columns 2..) get no gradient.
    let [_, n, m] = setup.shape;
    for (k, p) in setup.problems.iter().enumerate() {
        for i in 0..n {
            for j in 0..m {
                if i >= p.n || j >= p.m {
                    assert_eq!(grad_cost[(k * n + i) * m + j], 0.0, "{mode:?}: padded grad");
                }
            }
        }
    }

    let mut rng = Rng(seed ^ 0xABCD);
    for trial in 0..3 {
        let dirs = directions(&setup, &mut rng, balanced);
        let plus = values(loss(&setup, shifted(&setup, &dirs, H), &config))[0];
        let minus = values(loss(&setup, shifted(&setup, &dirs, -H), &config))[0];
        let finite_difference = (plus - minus) / (2.0 * H);
        let analytic = dot(&grad_cost, &dirs[0]) + dot(&grad_a, &dirs[1]) + dot(&grad_b, &dirs[2]);
        assert!(
            (analytic - finite_difference).abs() <= 1e-5 * finite_difference.abs().max(1.0),
            "{mode:?} balanced={balanced} trial {trial}: autodiff {analytic} vs finite \
             differences {finite_difference}"
        );
    }
}

#[test]
fn implicit_gradients_match_finite_differences_balanced() {
    check_mode(true, GradientMode::Implicit, 1);
}

#[test]
fn implicit_gradients_match_finite_differences_unbalanced() {
    check_mode(false, GradientMode::Implicit, 2);
}

#[test]
fn unrolled_gradients_match_finite_differences_balanced() {
    check_mode(true, GradientMode::Unrolled, 3);
}

#[test]
fn unrolled_gradients_match_finite_differences_unbalanced() {
    check_mode(false, GradientMode::Unrolled, 4);
}

#[test]
fn unrolled_gradients_through_the_full_log_sum_exp_updates() {
    check_mode_with(true, GradientMode::Unrolled, 8, false);
    check_mode_with(false, GradientMode::Unrolled, 9, false);
}

#[test]
fn implicit_gradients_after_full_log_sum_exp_updates() {
    check_mode_with(false, GradientMode::Implicit, 10, false);
}

#[test]
fn semi_relaxed_implicit_gradients_match_finite_differences() {
    let setup = setup(5, false);
    let config = UnbalancedConfig::new(0.3, f64::INFINITY, 1.5)
        .with_max_iters(20_000)
        .with_tolerance(1e-13)
        .with_implicit_tolerance(1e-12);
    let (cost, a, b) = inputs(&setup);
    let cost = cost.require_grad();
    let grads = loss(&setup, (cost.clone(), a.clone(), b.clone()), &config).backward();
    let grad_cost = values(cost.grad(&grads).unwrap());
    let mut rng = Rng(99);
    let dirs = directions(&setup, &mut rng, false);
    let no_mass = [dirs[0].clone(), vec![0.0; 8], vec![0.0; 8]];
    let plus = values(loss(&setup, shifted(&setup, &no_mass, H), &config))[0];
    let minus = values(loss(&setup, shifted(&setup, &no_mass, -H), &config))[0];
    let finite_difference = (plus - minus) / (2.0 * H);
    let analytic = dot(&grad_cost, &dirs[0]);
    assert!(
        (analytic - finite_difference).abs() <= 1e-5 * finite_difference.abs().max(1.0),
        "autodiff {analytic} vs finite differences {finite_difference}"
    );
}

#[test]
fn detach_mode_builds_no_graph() {
    let setup = setup(6, true);
    let config = config(true, GradientMode::Detach);
    let (cost, a, b) = inputs(&setup);
    let cost = cost.require_grad();
    let extra = cost.clone().sum();
    let grads = (loss(&setup, (cost.clone(), a, b), &config) + extra).backward();
    // Only the direct `cost.sum()` term reaches the cost: the solve contributed nothing.
    let grad = values(cost.grad(&grads).unwrap());
    assert!(grad.iter().all(|g| *g == 1.0), "{grad:?}");
}

#[test]
fn implicit_and_unrolled_agree_on_the_cost_gradient() {
    let setup = setup(7, true);
    let grad_for = |mode| {
        let (cost, a, b) = inputs(&setup);
        let cost = cost.require_grad();
        let grads = loss(&setup, (cost.clone(), a, b), &config(true, mode)).backward();
        values(cost.grad(&grads).unwrap())
    };
    let implicit = grad_for(GradientMode::Implicit);
    let unrolled = grad_for(GradientMode::Unrolled);
    for (i, u) in implicit.iter().zip(&unrolled) {
        assert!((i - u).abs() < 1e-7, "implicit {i} vs unrolled {u}");
    }
}

#[test]
fn implicit_gradients_in_f32_are_finite_and_match_unrolled() {
    // f32 stalls conjugate gradients at its rounding floor; the backward must stop there
    // cleanly instead of dividing by a vanishing curvature.
    use burn::tensor::{backend::Backend, Distribution};
    let device = Default::default();
    let grad_for = |mode, iterations| {
        <TestAutodiff as Backend>::seed(&device, 0);
        let cost = Tensor::<TestAutodiff, 3>::random(
            [3, 24, 24],
            Distribution::Uniform(0.0, 1.0),
            &device,
        )
        .require_grad();
        let masses = Tensor::<TestAutodiff, 2>::ones([3, 24], &device).div_scalar(24.0);
        let config = otpref::SinkhornConfig::new(0.05)
            .with_max_iters(iterations)
            .with_tolerance(0.0)
            .with_gradient(mode);
        let t = otpref::sinkhorn(cost.clone(), masses.clone(), masses, &config).unwrap();
        let grads = (t.plan * cost.clone()).sum().backward();
        values(cost.grad(&grads).unwrap())
    };
    // Far from convergence the implicit gradient is only approximate, but always finite.
    let early = grad_for(GradientMode::Implicit, 3);
    assert!(early.iter().all(|g| g.is_finite()), "non-finite gradient");
    let unrolled = grad_for(GradientMode::Unrolled, 300);
    let implicit = grad_for(GradientMode::Implicit, 300);
    let scale = unrolled.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    for (i, u) in implicit.iter().zip(&unrolled) {
        assert!((i - u).abs() < 1e-3 * scale, "implicit {i} vs unrolled {u}");
    }
}
