//! Parity with POT on padded batches of mixed sizes (fixtures from
//! `tests/fixtures/generate_pot_fixtures.py`): plans agree to 1e-5 absolute in f32, with the
//! fused CPU solver and with the composed one.

use crate::common::floats;
use crate::common::{pad_batch, values, Problem, TestBackend};
use burn::tensor::DType;
use otpref::{sinkhorn, unbalanced_sinkhorn, SinkhornConfig, UnbalancedConfig};
use serde_json::Value;

const FIXTURE: &str = include_str!("../fixtures/sinkhorn_pot.json");

fn parse_rho(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "inf" => f64::INFINITY,
        other => other.as_f64().unwrap(),
    }
}

pub struct Case {
    pub kind: String,
    pub epsilon: f64,
    pub rho: (f64, f64),
    pub problems: Vec<Problem>,
    pub plans: Vec<Vec<f64>>,
}

pub fn cases() -> Vec<Case> {
    let json: Value = serde_json::from_str(FIXTURE).unwrap();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let problems: Vec<Problem> = case["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let a = floats(&p["a"]);
                    let b = floats(&p["b"]);
                    Problem {
                        n: a.len(),
                        m: b.len(),
                        cost: floats(&p["cost"]),
                        a,
                        b,
                    }
                })
                .collect();
            let plans = case["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| floats(&p["plan"]))
                .collect();
            let kind = case["kind"].as_str().unwrap().to_string();
            let rho = if kind == "balanced" {
                (f64::INFINITY, f64::INFINITY)
            } else {
                (parse_rho(&case["rho_a"]), parse_rho(&case["rho_b"]))
            };
            Case {
                kind,
                epsilon: case["epsilon"].as_f64().unwrap(),
                rho,
                problems,
                plans,
            }
        })
        .collect()
}

/// Compares a padded batched plan against POT's unpadded per-problem plans.
fn assert_plans_match(case: &Case, plan: &[f64], n: usize, m: usize) {
    for (k, (problem, expected)) in case.problems.iter().zip(&case.plans).enumerate() {
        for i in 0..n {
            for j in 0..m {
                let got = plan[(k * n + i) * m + j];
                if i < problem.n && j < problem.m {
                    let want = expected[i * problem.m + j];
                    assert!(
                        (got - want).abs() <= 1e-5,
                        "{} eps={} rho={:?} problem {k} plan[{i}][{j}] = {got}, POT {want}",
                        case.kind,
                        case.epsilon,
                        case.rho
                    );
                } else {
                    assert_eq!(got, 0.0, "padded entry [{k}][{i}][{j}] must be exactly 0");
                }
            }
        }
    }
}

#[test]
fn balanced_plans_match_pot_sinkhorn_log() {
    // Both ways of evaluating the updates (matrix products and full log-sum-exp) and both
    // solvers must agree.
    for (case, matmul, fused) in cases()
        .iter()
        .filter(|c| c.kind == "balanced")
        .flat_map(|c| [(c, true), (c, false)])
        .flat_map(|(c, matmul)| [(c, matmul, true), (c, matmul, false)])
    {
        // NaN in padded cost entries must never leak into the result.
        let (cost, a, b) = pad_batch::<TestBackend>(&case.problems, f64::NAN, DType::F32);
        let [_, n, m] = cost.dims();
        let config = SinkhornConfig::new(case.epsilon)
            .with_max_iters(20_000)
            .with_matmul_updates(matmul)
            .with_fast_paths(fused);
        let transport = sinkhorn(cost, a, b, &config).unwrap();
        assert!(
            transport.all_converged(),
            "eps={} did not converge",
            case.epsilon
        );
        assert_plans_match(case, &values(transport.plan), n, m);
    }
}

#[test]
fn unbalanced_plans_match_pot_sinkhorn_unbalanced_entropy() {
    for (case, matmul, fused) in cases()
        .iter()
        .filter(|c| c.kind == "unbalanced")
        .flat_map(|c| [(c, true), (c, false)])
        .flat_map(|(c, matmul)| [(c, matmul, true), (c, matmul, false)])
    {
        let (cost, a, b) = pad_batch::<TestBackend>(&case.problems, 1e9, DType::F32);
        let [_, n, m] = cost.dims();
        let config = UnbalancedConfig::new(case.epsilon, case.rho.0, case.rho.1)
            .with_max_iters(20_000)
            .with_matmul_updates(matmul)
            .with_fast_paths(fused);
        let transport = unbalanced_sinkhorn(cost, a, b, &config).unwrap();
        assert!(
            transport.all_converged(),
            "rho={:?} did not converge",
            case.rho
        );
        assert_plans_match(case, &values(transport.plan), n, m);
    }
}

#[test]
fn reference_examples_from_pot_docs() {
    // The example of POT's `ot.sinkhorn` docs: a = b = [.5, .5], C = [[0, 1], [1, 0]].
    let problem = Problem {
        n: 2,
        m: 2,
        cost: vec![0.0, 1.0, 1.0, 0.0],
        a: vec![0.5, 0.5],
        b: vec![0.5, 0.5],
    };
    for (epsilon, rho, p00, p01) in [
        (1.0, 1.0, 0.5112281426, 0.1880703234),
        (1.0, 0.2, 0.7501025182, 0.2759472952),
        (0.1, 0.2, 0.57432831, 2.6074465e-05),
    ] {
        let (cost, a, b) =
            pad_batch::<TestBackend>(std::slice::from_ref(&problem), 0.0, DType::F32);
        let transport =
            unbalanced_sinkhorn(cost, a, b, &UnbalancedConfig::new(epsilon, rho, rho)).unwrap();
        let plan = values(transport.plan);
        assert!((plan[0] - p00).abs() < 1e-5 * p00.max(1.0), "{plan:?}");
        assert!((plan[1] - p01).abs() < 1e-5 * p01.max(1.0), "{plan:?}");
    }
}
