//! Bad input is an `OtprefError` with a helpful message: never a panic, never a silent NaN.

use crate::common::{tensor, TestBackend};
use burn::tensor::{DType, Tensor};
use otpref::{sinkhorn, unbalanced_sinkhorn, OtprefError, SinkhornConfig, UnbalancedConfig};

fn t3(values: Vec<f64>, shape: [usize; 3]) -> Tensor<TestBackend, 3> {
    tensor(values, shape, DType::F32)
}

fn t2(values: Vec<f64>, shape: [usize; 2]) -> Tensor<TestBackend, 2> {
    tensor(values, shape, DType::F32)
}

fn balanced(cost: Vec<f64>, a: Vec<f64>, b: Vec<f64>, epsilon: f64) -> Result<(), OtprefError> {
    let (n, m) = (a.len(), b.len());
    sinkhorn(
        t3(cost, [1, n, m]),
        t2(a, [1, n]),
        t2(b, [1, m]),
        &SinkhornConfig::new(epsilon),
    )
    .map(|_| ())
}

fn unbalanced(config: UnbalancedConfig) -> Result<(), OtprefError> {
    unbalanced_sinkhorn(
        t3(vec![0.0, 1.0, 1.0, 0.0], [1, 2, 2]),
        t2(vec![0.5, 0.5], [1, 2]),
        t2(vec![0.5, 0.5], [1, 2]),
        &config,
    )
    .map(|_| ())
}

fn message(result: Result<(), OtprefError>) -> String {
    result.unwrap_err().to_string()
}

const COST: [f64; 4] = [0.0, 1.0, 1.0, 0.0];

#[test]
fn mismatched_shapes() {
    let err = sinkhorn(
        t3(COST.to_vec(), [1, 2, 2]),
        t2(vec![1.0 / 3.0; 3], [1, 3]),
        t2(vec![0.5; 2], [1, 2]),
        &SinkhornConfig::new(0.1),
    )
    .unwrap_err();
    assert!(matches!(err, OtprefError::Shape(_)));
    assert!(err.to_string().contains("a must be [1, 2]"), "{err}");

    let err = sinkhorn(
        t3(COST.to_vec(), [1, 2, 2]),
        t2(vec![0.5; 2], [1, 2]),
        t2(vec![0.25; 4], [2, 2]),
        &SinkhornConfig::new(0.1),
    )
    .unwrap_err();
    assert!(err.to_string().contains("b must be [1, 2]"), "{err}");
}

#[test]
fn negative_or_non_finite_masses() {
    let msg = message(balanced(
        COST.to_vec(),
        vec![1.5, -0.5],
        vec![0.5, 0.5],
        0.1,
    ));
    assert!(
        msg.contains("a[0, 1] = -0.5") && msg.contains(">= 0"),
        "{msg}"
    );
    let msg = message(balanced(
        COST.to_vec(),
        vec![0.5, 0.5],
        vec![f64::NAN, 0.5],
        0.1,
    ));
    assert!(msg.contains("b[0, 0] = NaN"), "{msg}");
    let msg = message(balanced(
        COST.to_vec(),
        vec![0.5, 0.5],
        vec![f64::INFINITY, 0.5],
        0.1,
    ));
    assert!(msg.contains("finite"), "{msg}");
}

#[test]
fn a_problem_without_mass() {
    let msg = message(balanced(COST.to_vec(), vec![0.0, 0.0], vec![0.0, 0.0], 0.1));
    assert!(msg.contains("no positive mass"), "{msg}");
}

#[test]
fn balanced_totals_that_differ() {
    let msg = message(balanced(COST.to_vec(), vec![0.5, 0.5], vec![0.5, 0.7], 0.1));
    assert!(
        msg.contains("sum(a) = 1") && msg.contains("unbalanced_sinkhorn"),
        "{msg}"
    );
}

#[test]
fn non_positive_or_non_finite_epsilon() {
    for epsilon in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let msg = message(balanced(COST.to_vec(), vec![0.5; 2], vec![0.5; 2], epsilon));
        assert!(msg.contains("epsilon must be"), "{msg}");
    }
}

#[test]
fn non_positive_rho() {
    let msg = message(unbalanced(UnbalancedConfig::new(0.1, 0.0, 1.0)));
    assert!(msg.contains("rho_a must be > 0"), "{msg}");
    let msg = message(unbalanced(UnbalancedConfig::new(0.1, 1.0, -2.0)));
    assert!(msg.contains("rho_b must be > 0"), "{msg}");
    let msg = message(unbalanced(UnbalancedConfig::new(0.1, f64::NAN, 1.0)));
    assert!(msg.contains("rho_a"), "{msg}");
}

#[test]
fn zero_iteration_limits() {
    let msg = message(unbalanced(
        UnbalancedConfig::new(0.1, 1.0, 1.0).with_max_iters(0),
    ));
    assert!(msg.contains("max_iters"), "{msg}");
    let msg = message(unbalanced(
        UnbalancedConfig::new(0.1, 1.0, 1.0).with_check_every(0),
    ));
    assert!(msg.contains("check_every"), "{msg}");
}

#[test]
fn nan_or_inf_in_the_valid_cost() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let msg = message(balanced(
            vec![0.0, bad, 1.0, 0.0],
            vec![0.5; 2],
            vec![0.5; 2],
            0.1,
        ));
        assert!(msg.contains("NaN or infinite"), "{msg}");
    }
}

#[test]
fn nan_in_the_padded_cost_is_ignored() {
    // Column 1 is padding (b = 0): whatever the cost holds there is never read.
    let result = sinkhorn(
        t3(vec![0.3, f64::NAN, 0.7, f64::INFINITY], [1, 2, 2]),
        t2(vec![0.5, 0.5], [1, 2]),
        t2(vec![1.0, 0.0], [1, 2]),
        &SinkhornConfig::new(0.1),
    )
    .unwrap();
    let plan = crate::common::values(result.plan);
    assert!((plan[0] - 0.5).abs() < 1e-6 && (plan[2] - 0.5).abs() < 1e-6);
    assert_eq!((plan[1], plan[3]), (0.0, 0.0));
}
