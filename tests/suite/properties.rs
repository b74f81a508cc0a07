//! Property tests of the OT marginals and symmetries (proptest, fixed case count for CI),
//! through `otpref::testing`'s strategies and invariant checks, as a user's own tests would.

use crate::common::{pad_batch, values, Problem, TestBackend};
use burn::tensor::{DType, Tensor};
use otpref::testing::{
    check_balanced_marginals, check_plan_support, check_unbalanced_marginals, epsilons, ot_batches,
    Masses, OtBatchSpec,
};
use otpref::{sinkhorn, unbalanced_sinkhorn, SinkhornConfig, UnbalancedConfig};
use proptest::prelude::*;

/// A batch of 1-3 problems of sizes 1..=6, random costs in [0, 1] and positive masses
/// normalised to 1 (balanced-ready).
fn batch() -> impl Strategy<Value = Vec<Problem>> {
    ot_batches(OtBatchSpec::default())
}

fn dims(problems: &[Problem]) -> (usize, usize) {
    (
        problems.iter().map(|p| p.n).max().unwrap(),
        problems.iter().map(|p| p.m).max().unwrap(),
    )
}

fn solve_balanced(problems: &[Problem], epsilon: f64) -> (Vec<f64>, Vec<bool>) {
    let (cost, a, b) = pad_batch::<TestBackend>(problems, 0.0, DType::F32);
    let t = sinkhorn(
        cost,
        a,
        b,
        &SinkhornConfig::new(epsilon).with_max_iters(5000),
    )
    .unwrap();
    (values(t.plan), t.converged)
}

proptest! {
    #![proptest_config(crate::common::proptest_config(32))]

    #[test]
    fn balanced_plans_have_the_right_marginals_and_zero_padding(
        problems in batch(), epsilon in epsilons(0.02..=1.0)
    ) {
        let (cost, a, b) = pad_batch::<TestBackend>(&problems, f64::NAN, DType::F32);
        let config = SinkhornConfig::new(epsilon).with_max_iters(5000);
        let t = sinkhorn(cost, a.clone(), b.clone(), &config).unwrap();
        prop_assert!(t.all_converged());
        check_plan_support(t.plan.clone(), a.clone(), b.clone())?;
        // Tolerance 1e-6 on ||P1 - a||_1 plus f32 rounding of the sums.
        check_balanced_marginals(t.plan, a, b, 1e-5)?;
    }

    #[test]
    fn near_zero_masses_keep_their_marginals(
        problems in ot_batches(OtBatchSpec { masses: Masses::NearZero, ..Default::default() }),
        epsilon in epsilons(0.05..=1.0)
    ) {
        let (cost, a, b) = pad_batch::<TestBackend>(&problems, 0.0, DType::F32);
        let config = SinkhornConfig::new(epsilon).with_max_iters(5000);
        let t = sinkhorn(cost, a.clone(), b.clone(), &config).unwrap();
        prop_assert!(t.all_converged());
        check_plan_support(t.plan.clone(), a.clone(), b.clone())?;
        check_balanced_marginals(t.plan.clone(), a, b, 1e-5)?;
        // The L1 check cannot see an entry of 1e-6 that is wholly wrong: each row's and
        // column's own sum must match its mass relatively too.
        let (n, m) = dims(&problems);
        let plan = values(t.plan);
        for (k, p) in problems.iter().enumerate() {
            for i in 0..p.n {
                let row: f64 = (0..m).map(|j| plan[(k * n + i) * m + j]).sum();
                prop_assert!((row - p.a[i]).abs() <= 1e-3 * p.a[i] + 1e-9,
                    "problem {} row {}: {} vs a = {}", k, i, row, p.a[i]);
            }
            for j in 0..p.m {
                let col: f64 = (0..n).map(|i| plan[(k * n + i) * m + j]).sum();
                prop_assert!((col - p.b[j]).abs() <= 1e-3 * p.b[j] + 1e-9,
                    "problem {} column {}: {} vs b = {}", k, j, col, p.b[j]);
            }
        }
    }

    #[test]
    fn adding_a_constant_to_the_cost_leaves_a_balanced_plan_unchanged(
        problems in batch(), epsilon in 0.05f64..1.0, shift in -5.0f64..5.0
    ) {
        let (plan, _) = solve_balanced(&problems, epsilon);
        let shifted: Vec<Problem> = problems
            .iter()
            .map(|p| Problem { cost: p.cost.iter().map(|c| c + shift).collect(), ..p.clone() })
            .collect();
        let (plan_shifted, _) = solve_balanced(&shifted, epsilon);
        for (x, y) in plan.iter().zip(&plan_shifted) {
            prop_assert!((x - y).abs() < 1e-5, "{} vs {}", x, y);
        }
    }

    #[test]
    fn transposing_the_problem_transposes_the_plan(
        problems in batch(), epsilon in 0.05f64..1.0
    ) {
        let (plan, _) = solve_balanced(&problems, epsilon);
        let transposed: Vec<Problem> = problems
            .iter()
            .map(|p| Problem {
                n: p.m,
                m: p.n,
                cost: (0..p.m * p.n).map(|idx| p.cost[(idx % p.n) * p.m + idx / p.n]).collect(),
                a: p.b.clone(),
                b: p.a.clone(),
            })
            .collect();
        let (plan_t, _) = solve_balanced(&transposed, epsilon);
        let (n, m) = dims(&problems);
        for k in 0..problems.len() {
            for i in 0..n {
                for j in 0..m {
                    let x = plan[(k * n + i) * m + j];
                    let y = plan_t[(k * m + j) * n + i];
                    prop_assert!((x - y).abs() < 1e-5, "{} vs {}", x, y);
                }
            }
        }
    }

    #[test]
    fn unbalanced_plans_approach_the_balanced_one_as_rho_grows(
        problems in batch(), epsilon in 0.1f64..1.0
    ) {
        let (balanced, _) = solve_balanced(&problems, epsilon);
        let mut previous = f64::INFINITY;
        for rho in [1.0, 10.0, 100.0, 1e4] {
            let (cost, a, b) = pad_batch::<TestBackend>(&problems, 0.0, DType::F32);
            let config = UnbalancedConfig::new(epsilon, rho, rho).with_max_iters(20_000);
            let plan = values(unbalanced_sinkhorn(cost, a, b, &config).unwrap().plan);
            let distance: f64 = plan.iter().zip(&balanced).map(|(x, y)| (x - y).abs()).sum();
            prop_assert!(distance <= previous + 1e-6, "rho {}: {} after {}", rho, distance, previous);
            previous = distance;
        }
        prop_assert!(previous < 1e-3, "rho = 1e4 is still {} away from balanced", previous);
    }

    #[test]
    fn unbalanced_marginals_follow_the_kl_optimality_condition(
        problems in batch(), epsilon in 0.05f64..1.0, rho_a in 0.05f64..5.0, rho_b in 0.05f64..5.0
    ) {
        // Stationarity of <P,C> + ε Σ P(log P - 1) + ρ_a KL(P1|a) + ρ_b KL(Pᵀ1|b) with
        // P = exp((f + g - C)/ε) gives f = -ρ_a log(P1 / a) and g = -ρ_b log(Pᵀ1 / b).
        let (cost, a, b) = pad_batch::<TestBackend>(&problems, 0.0, DType::F32);
        let config = UnbalancedConfig::new(epsilon, rho_a, rho_b).with_max_iters(20_000);
        let t = unbalanced_sinkhorn(cost, a.clone(), b.clone(), &config).unwrap();
        prop_assert!(t.all_converged());
        check_plan_support(t.plan.clone(), a.clone(), b.clone())?;
        check_unbalanced_marginals(&t, a, b, rho_a, rho_b, 1e-4)?;
    }

    #[test]
    fn a_stronger_penalty_brings_the_marginals_closer(
        problems in batch(), epsilon in 0.05f64..1.0, rho in 0.05f64..2.0
    ) {
        let marginal_gap = |rho: f64| -> f64 {
            let (cost, a, b) = pad_batch::<TestBackend>(&problems, 0.0, DType::F32);
            let config = UnbalancedConfig::new(epsilon, rho, rho).with_max_iters(20_000);
            let t = unbalanced_sinkhorn(cost, a.clone(), b.clone(), &config).unwrap();
            let rows: Tensor<TestBackend, 2> = t.plan.clone().sum_dim(2).squeeze_dim(2);
            let cols: Tensor<TestBackend, 2> = t.plan.sum_dim(1).squeeze_dim(1);
            values((rows - a).abs().sum() + (cols - b).abs().sum())[0]
        };
        let weak = marginal_gap(rho);
        let strong = marginal_gap(rho * 4.0);
        prop_assert!(strong <= weak + 1e-6, "rho {}: gap {} vs 4 rho: {}", rho, weak, strong);
    }
}
