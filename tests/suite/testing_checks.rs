//! `otpref::testing`'s checks catch what they are for: each is given an input that breaks its
//! invariant by a known amount and must name the place and the size.

use crate::common::{tensor, TestAutodiff, TestBackend};
use burn::tensor::{DType, Tensor};
use otpref::testing::{
    check_balanced_marginals, check_finite, check_gradient, check_plan_support,
    check_unbalanced_marginals, check_weight_budget,
};
use otpref::{TokenWeights, Transport, WeightBudget};

fn t<const D: usize>(values: Vec<f64>, shape: [usize; D]) -> Tensor<TestBackend, D> {
    tensor(values, shape, DType::F32)
}

#[test]
fn marginal_and_support_checks_name_the_entry_and_the_size() {
    // Problem 0 is a coupling of a = b = (0.5, 0.5); problem 1's row 1 holds 0.1 too little,
    // and its padded column 1 (b = 0) carries mass.
    let plan = t(vec![0.25, 0.25, 0.25, 0.25, 0.5, 0.0, 0.3, 0.1], [2, 2, 2]);
    let a = t(vec![0.5, 0.5, 0.5, 0.5], [2, 2]);
    let b = t(vec![0.5, 0.5, 1.0, 0.0], [2, 2]);
    let v = check_balanced_marginals(plan.clone(), a.clone(), b.clone(), 1e-5).unwrap_err();
    assert_eq!(v.location, "problem 1, row 1", "{v}");
    assert!((v.size - 0.1).abs() < 1e-6, "{v}");
    let v = check_plan_support(plan.clone(), a.clone(), b.clone()).unwrap_err();
    assert_eq!(v.location, "problem 1, entry (1, 1)", "{v}");
    let first = plan.slice([0..1, 0..2, 0..2]);
    let (a0, b0) = (a.slice([0..1, 0..2]), b.slice([0..1, 0..2]));
    assert_eq!(
        check_balanced_marginals(first.clone(), a0.clone(), b0.clone(), 1e-6),
        Ok(())
    );
    assert_eq!(check_plan_support(first, a0, b0), Ok(()));
}

#[test]
fn the_unbalanced_check_compares_with_the_relaxed_marginals_of_the_potentials() {
    // a = b = (0.5, 0.5), ρ = 1. With f = g = 0 the relaxed marginals are a and b themselves;
    // f₁ = −ln 1.2 moves row 1's to 0.5 · 1.2 = 0.6. The second plan's row 1 and column 1
    // sum to 0.6: right for row 1 with that f, 0.1 (relative 0.2) too much for column 1.
    let transport = |plan: Vec<f64>, f: Vec<f64>| Transport {
        plan: t(plan, [1, 2, 2]),
        f: t(f, [1, 2]),
        g: t(vec![0.0, 0.0], [1, 2]),
        iterations: vec![1],
        converged: vec![true],
        marginal_error: vec![0.0],
    };
    let (a, b) = (t(vec![0.5, 0.5], [1, 2]), t(vec![0.5, 0.5], [1, 2]));
    let even = transport(vec![0.25; 4], vec![0.0, 0.0]);
    assert_eq!(
        check_unbalanced_marginals(&even, a.clone(), b.clone(), 1.0, 1.0, 1e-5),
        Ok(())
    );
    let heavier = transport(vec![0.25, 0.25, 0.25, 0.35], vec![0.0, -(1.2f64.ln())]);
    let v = check_unbalanced_marginals(&heavier, a, b, 1.0, 1.0, 1e-3).unwrap_err();
    assert_eq!(v.location, "problem 0, column 1", "{v}");
    assert!((v.size - 0.2).abs() < 1e-5, "{v}");
}

#[test]
fn the_budget_check_catches_a_wrong_total_and_weight_on_padding() {
    // Lengths (2, 1): τ = min = 1 for both responses.
    let chosen_mask = t(vec![1.0, 1.0], [1, 2]);
    let rejected_mask = t(vec![1.0, 0.0], [1, 2]);
    let weights = |chosen: Vec<f64>, rejected: Vec<f64>| TokenWeights {
        chosen: t(chosen, [1, 2]),
        rejected: t(rejected, [1, 2]),
        convergence: None,
    };
    let check = |w: &TokenWeights<TestBackend>| {
        check_weight_budget(
            w,
            chosen_mask.clone(),
            rejected_mask.clone(),
            WeightBudget::Min,
            1e-4,
        )
    };
    assert_eq!(check(&weights(vec![0.5, 0.5], vec![1.0, 0.0])), Ok(()));
    let v = check(&weights(vec![0.75, 0.5], vec![1.0, 0.0])).unwrap_err();
    assert!(v.location.starts_with("pair 0, chosen"), "{v}");
    assert!((v.size - 0.25).abs() < 1e-6, "{v}");
    let v = check(&weights(vec![0.5, 0.5], vec![1.0, 0.2])).unwrap_err();
    assert_eq!(v.location, "pair 0, rejected token 1 (mask 0)", "{v}");
}

#[test]
fn the_gradient_check_catches_a_wrong_gradient_and_a_missing_one() {
    let x = t(vec![0.3, -1.2, 2.0], [3]);
    // d/dx Σ x² = 2x: right.
    let square = |x: Tensor<TestAutodiff, 1>| (x.clone() * x).sum();
    assert_eq!(check_gradient(square, x.clone(), 1e-2, 1e-2), Ok(()));
    // A detached factor halves the gradient autodiff sees: x instead of 2x.
    let half = |x: Tensor<TestAutodiff, 1>| (x.clone().detach() * x).sum();
    let v = check_gradient(half, x.clone(), 1e-2, 1e-2).unwrap_err();
    assert_eq!(v.location, "x[0]", "{v}");
    let v =
        check_gradient(|x: Tensor<TestAutodiff, 1>| x.detach().sum(), x, 1e-2, 1e-2).unwrap_err();
    assert_eq!(v.invariant, "a gradient reaches the input", "{v}");
}

#[test]
fn the_finite_check_names_the_index() {
    let v = check_finite("logits", t(vec![0.0, 1.0, f64::NAN, 2.0], [2, 2])).unwrap_err();
    assert_eq!(v.location, "logits[1, 0]", "{v}");
}
