//! With `gpu-tests` (CUDA) or `wgpu-tests` (wgpu) only: the same inputs through that backend,
//! on its one-pass kernels, and through the pure-Rust CPU backend, on the composed reference
//! solver, give the same plans, potentials, weights, margins and gradients, to 1e-5 (f32).
//!
//! The other modules check the device against the independent references (POT, closed forms,
//! finite differences); this one pins the two backends to each other, including on padded
//! problems.

use burn::backend::{Autodiff, Flex};
use burn::tensor::DType;
use otpref::{
    aplot_margins, otpo_token_weights, sinkhorn, unbalanced_sinkhorn, AplotConfig, GradientMode,
    OtBackend, OtpoConfig, SinkhornConfig, UnbalancedConfig,
};

use crate::common::{pad_batch, random_problem, tensor, values, Problem, Rng, TestBackend};

const TOLERANCE: f64 = 1e-5;

fn assert_close(what: &str, device: &[f64], cpu: &[f64]) {
    assert_eq!(device.len(), cpu.len(), "{what}: lengths");
    let worst = device
        .iter()
        .zip(cpu)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= TOLERANCE,
        "{what}: device and CPU differ by {worst:e}"
    );
}

/// Problems of different sizes in one padded batch.
fn problems(seed: u64) -> Vec<Problem> {
    let mut rng = Rng(seed);
    vec![
        random_problem(&mut rng, 7, 5, true),
        random_problem(&mut rng, 16, 16, true),
        random_problem(&mut rng, 3, 11, true),
    ]
}

/// Plan, f and g of the balanced and the unbalanced solve, and the implicit gradient of
/// `<W, plan>` with respect to the cost.
fn solves<B: OtBackend>(problems: &[Problem], fast_paths: bool) -> Vec<Vec<f64>> {
    let (cost, a, b) = pad_batch::<Autodiff<B>>(problems, 0.5, DType::F32);
    let cost = cost.require_grad();
    let balanced = sinkhorn(
        cost.clone(),
        a.clone(),
        b.clone(),
        &SinkhornConfig::new(0.05)
            .with_tolerance(1e-7)
            .with_max_iters(20_000)
            .with_gradient(GradientMode::Implicit)
            .with_fast_paths(fast_paths),
    )
    .unwrap();
    // Any fixed weights W make <W, plan> a scalar whose cost gradient exercises the backward.
    let weights = cost.clone().detach().powf_scalar(2.0);
    let grads = (balanced.plan.clone() * weights).sum().backward();
    let cost_grad = cost.grad(&grads).unwrap();
    let unbalanced = unbalanced_sinkhorn(
        cost.clone().detach(),
        a,
        b,
        &UnbalancedConfig::new(0.1, 0.5, 2.0)
            .with_tolerance(1e-7)
            .with_max_iters(20_000)
            .with_gradient(GradientMode::Detach)
            .with_fast_paths(fast_paths),
    )
    .unwrap();
    vec![
        values(balanced.plan.detach()),
        values(balanced.f.detach()),
        values(balanced.g.detach()),
        values(cost_grad),
        values(unbalanced.plan),
    ]
}

#[test]
fn sinkhorn_plans_potentials_and_gradients() {
    for seed in 0..3 {
        let problems = problems(seed);
        let device = solves::<TestBackend>(&problems, true);
        let cpu = solves::<Flex>(&problems, false);
        for (what, (x, y)) in ["plan", "f", "g", "cost gradient", "unbalanced plan"]
            .iter()
            .zip(device.iter().zip(&cpu))
        {
            assert_close(&format!("seed {seed}, {what}"), x, y);
        }
    }
}

/// OTPO weights of a padded batch, and APLOT margins, on backend `B`.
fn weights_and_margins<B: OtBackend>(seed: u64, fast_paths: bool) -> Vec<Vec<f64>> {
    let mut rng = Rng(seed);
    let (batch, len_c, len_r, hidden) = (3, 12, 9, 32);
    let chosen = tensor::<B, 3>(
        rng.vec(batch * len_c * hidden, -1.0, 1.0),
        [batch, len_c, hidden],
        DType::F32,
    );
    let rejected = tensor::<B, 3>(
        rng.vec(batch * len_r * hidden, -1.0, 1.0),
        [batch, len_r, hidden],
        DType::F32,
    );
    let lengths = |len: usize, real: [usize; 3]| {
        let mask: Vec<f64> = real
            .iter()
            .flat_map(|&r| (0..len).map(move |t| f64::from(u8::from(t < r))))
            .collect();
        tensor::<B, 2>(mask, [batch, len], DType::F32)
    };
    let weights = otpo_token_weights(
        chosen,
        rejected,
        lengths(len_c, [12, 7, 3]),
        lengths(len_r, [9, 9, 2]),
        &OtpoConfig::new().with_fast_paths(fast_paths),
    )
    .unwrap();
    let repr = |rng: &mut Rng| tensor::<B, 2>(rng.vec(4 * 8, -1.0, 1.0), [4, 8], DType::F32);
    let rewards = |rng: &mut Rng| tensor::<B, 1>(rng.vec(4, -2.0, 2.0), [4], DType::F32);
    let (h_c, h_r) = (repr(&mut rng), repr(&mut rng));
    let (r_c, r_r) = (rewards(&mut rng), rewards(&mut rng));
    let margins = aplot_margins(h_c, h_r, r_c, r_r, &AplotConfig::new()).unwrap();
    vec![
        values(weights.chosen),
        values(weights.rejected),
        values(margins),
    ]
}

#[test]
fn otpo_weights_and_aplot_margins() {
    for seed in 0..3 {
        let device = weights_and_margins::<TestBackend>(seed, true);
        let cpu = weights_and_margins::<Flex>(seed, false);
        for (what, (x, y)) in ["chosen weights", "rejected weights", "APLOT margins"]
            .iter()
            .zip(device.iter().zip(&cpu))
        {
            assert_close(&format!("seed {seed}, {what}"), x, y);
        }
    }
}
