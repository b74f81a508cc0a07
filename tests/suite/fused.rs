//! The fast paths against the composed solver, the reference implementation
//! (`fast_paths = false`): the same iterations and reports, and plans, potentials, OTPO
//! weights and implicit gradients equal to f32 rounding. The fast path is the fused CPU
//! solver on Flex and ndarray, the one-pass kernels on CUDA (`gpu-tests`) and wgpu
//! (`wgpu-tests`).

use crate::common::{pad_batch, proptest_config, random_problem, values, Problem, Rng};
use crate::common::{TestAutodiff, TestBackend};
use crate::pot_parity::cases;
use burn::tensor::{backend::Backend, DType, Distribution, Tensor};
use otpref::testing::{ot_batches, Masses, OtBatchSpec};
use otpref::{
    otpo_token_weights, unbalanced_sinkhorn, CostNormalization, GradientMode, OtpoConfig,
    UnbalancedConfig,
};
use proptest::prelude::*;

/// What a solve returned: plan, f, g (as f64) and the report.
#[derive(Debug)]
struct Solved {
    plan: Vec<f64>,
    f: Vec<f64>,
    g: Vec<f64>,
    iterations: Vec<usize>,
    converged: Vec<bool>,
}

fn solve(problems: &[Problem], pad_cost: f64, dtype: DType, config: &UnbalancedConfig) -> Solved {
    let (cost, a, b) = pad_batch::<TestBackend>(problems, pad_cost, dtype);
    let t = unbalanced_sinkhorn(cost, a, b, config).unwrap();
    Solved {
        plan: values(t.plan),
        f: values(t.f),
        g: values(t.g),
        iterations: t.iterations,
        converged: t.converged,
    }
}

/// Largest `|fused - reference| / (1 + |reference|)`.
fn worst(fused: &[f64], reference: &[f64]) -> f64 {
    assert_eq!(fused.len(), reference.len());
    fused
        .iter()
        .zip(reference)
        .map(|(f, r)| (f - r).abs() / (1.0 + r.abs()))
        .fold(0.0, f64::max)
}

/// Solves with both solvers and checks that they agree: plans to `plan_tol` (absolute:
/// entries are at most the total mass), padded entries exactly 0 in both.
///
/// `Steps::Exactly` runs both for a fixed number of iterations (one check, at the end): the
/// same arithmetic up to summation order, so the potentials must agree too (to
/// `potential_tol`, relative to `1 + |f|`). Run to a tolerance, a problem whose error is
/// within rounding of it can stop one check earlier in one solver than in the other: then
/// each plan is within the tolerance of the solution, and balanced potentials may differ
/// by the constant shift they are defined up to, so only plans and convergence are compared.
fn assert_solvers_agree(
    problems: &[Problem],
    config: &UnbalancedConfig,
    steps: Steps,
    (plan_tol, potential_tol): (f64, f64),
) {
    let config = match steps {
        Steps::Exactly(count) => config
            .clone()
            .with_max_iters(count)
            .with_check_every(count)
            .with_tolerance(0.0),
        Steps::ToConvergence => config.clone(),
    };
    let fused = solve(
        problems,
        f64::NAN,
        DType::F32,
        &config.clone().with_fast_paths(true),
    );
    let reference = solve(
        problems,
        f64::NAN,
        DType::F32,
        &config.clone().with_fast_paths(false),
    );
    let context = format!(
        "rho=({}, {}) eps={}",
        config.rho_a, config.rho_b, config.epsilon
    );
    let plan = worst(&fused.plan, &reference.plan);
    assert!(plan <= plan_tol, "{context}: plans differ by {plan:e}");
    match steps {
        Steps::Exactly(count) => {
            // A balanced problem whose state is an exact f32 fixed point (marginal error 0
            // <= tolerance 0) at the last check reports `count - 1`, in either solver.
            for iterations in fused.iterations.iter().chain(&reference.iterations) {
                assert!(
                    *iterations == count || *iterations + 1 == count,
                    "{context}: {iterations} iterations of {count}"
                );
            }
            let f = worst(&fused.f, &reference.f);
            let g = worst(&fused.g, &reference.g);
            assert!(
                f <= potential_tol && g <= potential_tol,
                "{context}: potentials differ by {f:e}, {g:e}"
            );
        }
        Steps::ToConvergence => assert_eq!(fused.converged, reference.converged, "{context}"),
    }
    for (k, (x, y)) in fused.plan.iter().zip(&reference.plan).enumerate() {
        assert!(
            *x != 0.0 || *y == 0.0 || *y < 1e-30,
            "zero at {k} only in the fused plan"
        );
        assert!(x.is_finite(), "plan entry {k} is {x}");
    }
}

/// How long both solvers run.
#[derive(Clone, Copy)]
enum Steps {
    Exactly(usize),
    ToConvergence,
}

/// A batch of 1-4 problems of sizes 1..=20 with costs in [0, 1) or [0, 30) and positive
/// masses normalised to 1.
fn batch() -> impl Strategy<Value = Vec<Problem>> {
    prop::sample::select(vec![1.0, 30.0]).prop_flat_map(|cost_spread| {
        ot_batches(OtBatchSpec {
            batch: 1..=4,
            rows: 1..=20,
            cols: 1..=20,
            cost_spread,
            masses: Masses::Normalised,
        })
    })
}

/// ρ for one side: exact, or relaxed.
fn rho() -> impl Strategy<Value = f64> {
    prop::sample::select(vec![f64::INFINITY, 1.0, 0.1])
}

proptest! {
    #![proptest_config(proptest_config(48))]

    /// Balanced, unbalanced and semi-relaxed batches with padding (NaN in the padded cost),
    /// both kernel forms (ε 0.01 on costs up to 30 needs the log form; `matmul_updates`
    /// false forces it), step for step: 1 to 80 iterations.
    #[test]
    fn fused_solver_equals_the_reference(
        problems in batch(),
        epsilon in prop::sample::select(vec![0.01, 0.05, 0.5]),
        rho_a in rho(),
        rho_b in rho(),
        matmul in any::<bool>(),
        iterations in 1usize..=80,
    ) {
        let config = UnbalancedConfig::new(epsilon, rho_a, rho_b)
            .with_matmul_updates(matmul)
            .with_gradient(GradientMode::Detach);
        assert_solvers_agree(&problems, &config, Steps::Exactly(iterations), (1e-6, 1e-5));
    }

    /// The same batches run to convergence (tolerance 1e-6).
    #[test]
    fn fused_solver_converges_where_the_reference_does(
        problems in batch(),
        epsilon in prop::sample::select(vec![0.01, 0.05, 0.5]),
        rho_a in rho(),
        rho_b in rho(),
    ) {
        let config = UnbalancedConfig::new(epsilon, rho_a, rho_b).with_max_iters(3000);
        // Each plan's marginals are within the tolerance 1e-6 of the solution's.
        assert_solvers_agree(&problems, &config, Steps::ToConvergence, (2e-6, f64::NAN));
    }
}

/// The POT fixtures (mixed sizes, padded, balanced and unbalanced), both kernel forms.
#[test]
fn pot_fixtures_give_the_same_plans() {
    for case in cases() {
        for matmul in [true, false] {
            let config = UnbalancedConfig::new(case.epsilon, case.rho.0, case.rho.1)
                .with_max_iters(20_000)
                .with_matmul_updates(matmul);
            assert_solvers_agree(
                &case.problems,
                &config,
                Steps::ToConvergence,
                (2e-6, f64::NAN),
            );
        }
    }
}

/// A problem large enough that its rows are split over threads (and one small one beside
/// it), for a fixed number of iterations: the same arithmetic up to summation order; then
/// the implicit backward.
#[test]
fn rows_split_over_threads() {
    let mut rng = Rng(7);
    let problems = vec![
        random_problem(&mut rng, 420, 400, true),
        random_problem(&mut rng, 30, 20, true),
    ];
    for (rho, epsilon) in [(f64::INFINITY, 0.05), (1.0, 0.05), (f64::INFINITY, 0.005)] {
        let config = UnbalancedConfig::new(epsilon, rho, rho);
        assert_solvers_agree(&problems, &config, Steps::Exactly(50), (1e-6, 1e-5));
    }
    // The implicit backward's passes are split the same way.
    for rho in [f64::INFINITY, 1.0] {
        let config = UnbalancedConfig::new(0.05, rho, rho)
            .with_max_iters(50)
            .with_check_every(50)
            .with_tolerance(0.0)
            .with_gradient(GradientMode::Implicit);
        assert_backwards_agree(&problems, &config);
    }
}

/// Gradients with respect to cost, `a` and `b` (as f64) of a loss that weighs the plan and both
/// potentials with fixed random weights, through the implicit backward.
fn implicit_gradients(problems: &[Problem], config: &UnbalancedConfig) -> [Vec<f64>; 3] {
    let (cost, a, b) = pad_batch::<TestAutodiff>(problems, f64::NAN, DType::F32);
    let (cost, a, b) = (cost.require_grad(), a.require_grad(), b.require_grad());
    let device = Default::default();
    TestAutodiff::seed(&device, 5);
    let weights = |shape: [usize; 3]| {
        Tensor::<TestAutodiff, 3>::random(shape, Distribution::Uniform(-1.0, 1.0), &device)
    };
    let [batch, n, m] = cost.dims();
    let (w_plan, w_f, w_g) = (
        weights([batch, n, m]),
        weights([batch, n, 1]),
        weights([batch, 1, m]),
    );
    let t = unbalanced_sinkhorn(cost.clone(), a.clone(), b.clone(), config).unwrap();
    let loss = (t.plan * w_plan).sum()
        + (t.f.unsqueeze_dim::<3>(2) * w_f).sum()
        + (t.g.unsqueeze_dim::<3>(1) * w_g).sum();
    let grads = loss.backward();
    [
        values(cost.grad(&grads).unwrap()),
        values(a.grad(&grads).unwrap()),
        values(b.grad(&grads).unwrap()),
    ]
}

/// The problem with its costs divided by the largest (when that is above 1).
fn unit_costs(mut problem: Problem) -> Problem {
    let top = problem.cost.iter().fold(1.0f64, |m, c| m.max(*c));
    problem.cost.iter_mut().for_each(|c| *c /= top);
    problem
}

/// The implicit gradients after the fused and the reference forward agree: both stop their
/// conjugate gradients at a relative residual of 1e-6 (differences seen up to 9e-6 over 300
/// random cases).
fn assert_backwards_agree(problems: &[Problem], config: &UnbalancedConfig) {
    let fused = implicit_gradients(problems, &config.clone().with_fast_paths(true));
    let reference = implicit_gradients(problems, &config.clone().with_fast_paths(false));
    let context = format!(
        "rho=({}, {}) eps={}",
        config.rho_a, config.rho_b, config.epsilon
    );
    for (name, (x, y)) in ["cost", "a", "b"].iter().zip(fused.iter().zip(&reference)) {
        assert!(
            x.iter().all(|v| v.is_finite()),
            "{context}: non-finite {name} gradient"
        );
        let difference = worst_scaled(x, y);
        assert!(
            difference < 3e-5,
            "{context}: {name} gradients differ by {difference:e}"
        );
    }
}

/// Largest `|fused - reference|` relative to the reference's largest entry.
fn worst_scaled(fused: &[f64], reference: &[f64]) -> f64 {
    let scale = reference.iter().fold(1e-12f64, |m, r| m.max(r.abs()));
    fused
        .iter()
        .zip(reference)
        .map(|(f, r)| (f - r).abs() / scale)
        .fold(0.0, f64::max)
}

proptest! {
    #![proptest_config(proptest_config(32))]

    /// The implicit backward (host conjugate gradients after a fused forward) against the
    /// reference's, on padded balanced, unbalanced and semi-relaxed batches, with upstream
    /// gradients on the plan and both potentials. Both forwards run the same fixed number of
    /// iterations, so the backwards see the same plan to f32 rounding. Costs are scaled to
    /// [0, 1]: with `C/ε` in the hundreds the plan is nearly a sparse matching, the system
    /// nearly singular in many directions, and rounding alone decides either solver's answer.
    #[test]
    fn implicit_gradients_are_the_same(
        problems in batch().prop_map(|problems| problems.into_iter().map(unit_costs).collect::<Vec<_>>()),
        epsilon in prop::sample::select(vec![0.05, 0.5]),
        rho_a in rho(),
        rho_b in rho(),
    ) {
        let config = UnbalancedConfig::new(epsilon, rho_a, rho_b)
            .with_max_iters(300)
            .with_check_every(300)
            .with_tolerance(0.0)
            .with_gradient(GradientMode::Implicit);
        assert_backwards_agree(&problems, &config);
    }
}

/// OTPO weights, whose cost (after the backend's product) and marginals-only solve run on the
/// host, padded and unpadded, with every cost normalisation.
#[test]
fn otpo_weights_are_the_same() {
    let device = Default::default();
    TestBackend::seed(&device, 3);
    let chosen =
        Tensor::<TestBackend, 3>::random([4, 24, 16], Distribution::Normal(0.0, 1.0), &device);
    let rejected =
        Tensor::<TestBackend, 3>::random([4, 20, 16], Distribution::Normal(0.0, 1.0), &device);
    let lengths = |lens: [usize; 4], len: usize| {
        let mask: Vec<f32> = lens
            .iter()
            .flat_map(|l| (0..len).map(move |t| if t < *l { 1.0 } else { 0.0 }))
            .collect();
        Tensor::<TestBackend, 2>::from_data(burn::tensor::TensorData::new(mask, [4, len]), &device)
    };
    let normalizations = [
        CostNormalization::ValidPairs,
        CostNormalization::ValidPairsAlways,
        CostNormalization::Released,
        CostNormalization::None,
    ];
    let lengths_cases = [([24; 4], [20; 4]), ([24, 10, 3, 17], [20, 20, 1, 8])];
    for ((lens_c, lens_r), normalization) in lengths_cases
        .into_iter()
        .flat_map(|lens| normalizations.map(|n| (lens, n)))
    {
        let weights = |fused: bool| {
            let config = OtpoConfig::new()
                .with_normalization(normalization)
                .with_fast_paths(fused);
            let w = otpo_token_weights(
                chosen.clone(),
                rejected.clone(),
                lengths(lens_c, 24),
                lengths(lens_r, 20),
                &config,
            )
            .unwrap();
            [values(w.chosen), values(w.rejected)].concat()
        };
        let difference = worst(&weights(true), &weights(false));
        assert!(
            difference < 1e-6,
            "{normalization:?}: OTPO weights differ by {difference:e}"
        );
    }
}
