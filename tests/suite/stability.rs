//! Small ε and large costs: the log domain must neither underflow nor produce NaN.

use crate::common::{pad_batch, random_problem, values, Problem, Rng, TestBackend};
use burn::tensor::DType;
use otpref::{sinkhorn, unbalanced_sinkhorn, SinkhornConfig, UnbalancedConfig};

fn mixed_batch(seed: u64, scale: f64) -> Vec<Problem> {
    let mut rng = Rng(seed);
    [(12, 9), (5, 12), (12, 12)]
        .iter()
        .map(|&(n, m)| {
            let mut p = random_problem(&mut rng, n, m, true);
            p.cost.iter_mut().for_each(|c| *c *= scale);
            p
        })
        .collect()
}

fn row_error(plan: &[f64], problems: &[Problem]) -> f64 {
    let (n, m) = (12, 12);
    let mut worst: f64 = 0.0;
    for (k, p) in problems.iter().enumerate() {
        let error: f64 = (0..p.n)
            .map(|i| {
                let row: f64 = plan[(k * n + i) * m..(k * n + i + 1) * m].iter().sum();
                (row - p.a[i]).abs()
            })
            .sum();
        worst = worst.max(error);
    }
    worst
}

#[test]
fn balanced_epsilon_1e_3_on_unit_costs() {
    let problems = mixed_batch(11, 1.0);
    let (cost, a, b) = pad_batch::<TestBackend>(&problems, 0.0, DType::F32);
    // Sinkhorn needs ~3e4 iterations here (the same in f64): slow, but never unstable.
    let config = SinkhornConfig::new(1e-3)
        .with_max_iters(60_000)
        .with_tolerance(1e-5);
    let t = sinkhorn(cost, a, b, &config).unwrap();
    let plan = values(t.plan.clone());
    assert!(plan.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(values(t.f.clone())
        .iter()
        .chain(&values(t.g.clone()))
        .all(|v| v.is_finite()));
    assert!(t.all_converged(), "errors {:?}", t.marginal_error);
    assert!(row_error(&plan, &problems) < 2e-5);
}

#[test]
fn unbalanced_epsilon_1e_3_where_kernel_solvers_underflow() {
    // exp(-C/ε) underflows to 0 in f32 for C > 0.09 at ε = 1e-3: kernel-domain solvers
    // (POT's `sinkhorn_knopp_unbalanced`) divide by zero here.
    let problems = mixed_batch(12, 1.0);
    let (cost, a, b) = pad_batch::<TestBackend>(&problems, 0.0, DType::F32);
    let config = UnbalancedConfig::new(1e-3, 0.5, 0.5).with_max_iters(20_000);
    let t = unbalanced_sinkhorn(cost, a, b, &config).unwrap();
    let plan = values(t.plan.clone());
    assert!(plan.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(
        plan.iter().sum::<f64>() > 0.1,
        "the plan must not collapse to zero"
    );
    assert!(t.all_converged(), "errors {:?}", t.marginal_error);
}

#[test]
fn large_costs_with_moderate_epsilon() {
    let problems = mixed_batch(13, 1000.0);
    let (cost, a, b) = pad_batch::<TestBackend>(&problems, 0.0, DType::F32);
    let t = sinkhorn(cost, a, b, &SinkhornConfig::new(1.0).with_max_iters(20_000)).unwrap();
    let plan = values(t.plan.clone());
    assert!(plan.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(t.all_converged());
    assert!(row_error(&plan, &problems) < 1e-5);
}
