//! `sinkhorn` and `unbalanced_sinkhorn`: shapes, masses, costs, ε and ρ, iteration limits,
//! dtype ranges.

use super::*;

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

/// One balanced iteration reports the real row-marginal error of the plan it returns (the
/// loop alone never measures it), computed here from the plan.
#[test]
fn a_single_balanced_iteration_reports_its_marginal_error() {
    let a = vec![0.2, 0.3, 0.5];
    let b = vec![0.6, 0.4];
    let out = sinkhorn(
        t3(vec![0.0, 1.0, 0.5, 0.2, 1.0, 0.0], [1, 3, 2]),
        t2(a.clone(), [1, 3]),
        t2(b, [1, 2]),
        &SinkhornConfig::new(0.5).with_max_iters(1),
    )
    .unwrap();
    let plan = crate::common::values(out.plan);
    let error: f64 = (0..3)
        .map(|i| (plan[2 * i] + plan[2 * i + 1] - a[i]).abs())
        .sum();
    let reported = out.marginal_error[0];
    assert!(reported.is_finite(), "{reported}");
    assert!((reported - error).abs() < 1e-5, "{reported} vs {error}");
    assert_eq!(out.iterations[0], 1);
}

/// An ε so small that cost / ε overflows the dtype is an error naming epsilon, not NaN plans;
/// the same ε is fine in f64, where the quotient fits.
#[test]
fn epsilon_too_small_for_the_dtype() {
    let err = balanced(COST.to_vec(), vec![0.5; 2], vec![0.5; 2], 1e-39).unwrap_err();
    assert!(matches!(err, OtprefError::InvalidParameter(_)), "{err}");
    assert!(
        err.to_string().contains("epsilon = 1e-39 is too small"),
        "{err}"
    );
    let f64_ok = sinkhorn(
        tensor::<TestBackend, 3>(COST.to_vec(), [1, 2, 2], DType::F64),
        tensor::<TestBackend, 2>(vec![0.5; 2], [1, 2], DType::F64),
        tensor::<TestBackend, 2>(vec![0.5; 2], [1, 2], DType::F64),
        &SinkhornConfig::new(1e-39),
    );
    assert!(f64_ok.is_ok(), "{f64_ok:?}");
}

/// Masses normalised in bf16 or f16 have totals that differ by their rounding (here about
/// 1e-3 in bf16, 4e-4 in f16), which the balanced check accepts; a real mismatch is still
/// refused.
#[test]
#[cfg_attr(
    feature = "ndarray-tests",
    ignore = "ndarray has no bf16 or f16 tensors"
)]
fn balanced_totals_in_half_precision() {
    for dtype in [DType::BF16, DType::F16] {
        balanced_totals_in(dtype);
    }
}

fn balanced_totals_in(dtype: DType) {
    let solve = |a: Vec<f64>, b: Vec<f64>| {
        let (n, m) = (a.len(), b.len());
        sinkhorn(
            tensor::<TestBackend, 3>(vec![0.5; n * m], [1, n, m], dtype),
            tensor::<TestBackend, 2>(a, [1, n], dtype),
            tensor::<TestBackend, 2>(b, [1, m], dtype),
            &SinkhornConfig::new(0.1),
        )
    };
    let rounded = solve(vec![0.01; 100], vec![1.0 / 7.0; 7]);
    assert!(
        !matches!(rounded, Err(OtprefError::UnequalTotals(_))),
        "{dtype:?}: {:?}",
        rounded.err()
    );
    let err = solve(vec![0.01; 100], vec![0.2; 7]).unwrap_err();
    assert!(
        matches!(err, OtprefError::UnequalTotals(_)),
        "{dtype:?}: {err}"
    );
}

/// An ε so large that the potentials `f = ε log u` overflow the dtype (and 1/ε is subnormal)
/// is an error naming epsilon, not infinite potentials; in f64 the same ε gives the closed form of ε → ∞, the
/// independent coupling `P = a bᵀ`, with finite potentials.
#[test]
fn epsilon_too_large_for_the_dtype() {
    let err = balanced(COST.to_vec(), vec![0.5; 2], vec![0.5; 2], 1e39).unwrap_err();
    assert!(matches!(err, OtprefError::InvalidParameter(_)), "{err}");
    assert!(
        err.to_string().contains("epsilon = 1e39 is too large"),
        "{err}"
    );
    let a = [0.3, 0.7];
    let b = [0.6, 0.4];
    let transport = sinkhorn(
        tensor::<TestBackend, 3>(COST.to_vec(), [1, 2, 2], DType::F64),
        tensor::<TestBackend, 2>(a.to_vec(), [1, 2], DType::F64),
        tensor::<TestBackend, 2>(b.to_vec(), [1, 2], DType::F64),
        &SinkhornConfig::new(1e37),
    )
    .unwrap();
    let plan = crate::common::values(transport.plan);
    for (k, p) in plan.iter().enumerate() {
        assert!((p - a[k / 2] * b[k % 2]).abs() < 1e-12, "{plan:?}");
    }
    let potentials = crate::common::values(transport.f);
    assert!(potentials.iter().all(|f| f.is_finite()), "{potentials:?}");
}

/// |C/ε| so large (here 1e32) that padding could no longer be told apart from the cost is an
/// error naming epsilon, not a plan with mass on padded rows.
#[test]
fn cost_over_epsilon_beyond_the_solver_range() {
    let err = sinkhorn(
        t3(vec![-1e30, 0.0, 0.0, 0.0], [1, 2, 2]),
        tensor::<TestBackend, 2>(vec![1.0, 0.0], [1, 2], DType::F32),
        tensor::<TestBackend, 2>(vec![0.5, 0.5], [1, 2], DType::F32),
        &SinkhornConfig::new(0.01),
    )
    .unwrap_err();
    assert!(matches!(err, OtprefError::InvalidParameter(_)), "{err}");
    assert!(err.to_string().contains("epsilon"), "{err}");
}

/// A relaxed plan whose mass overflows (costs of -1e30: mass ~ exp(1e30/(ε+ρ))) is an error,
/// not an infinite plan.
#[test]
fn unbalanced_plan_overflow() {
    let err = unbalanced_sinkhorn(
        t3(vec![-1e20], [1, 1, 1]),
        tensor::<TestBackend, 2>(vec![0.05], [1, 1], DType::F32),
        tensor::<TestBackend, 2>(vec![0.05], [1, 1], DType::F32),
        &UnbalancedConfig::new(1.0, 3.0, 1.0),
    )
    .unwrap_err();
    assert!(matches!(err, OtprefError::NonFinite(_)), "{err}");
    assert!(err.to_string().contains("overflows"), "{err}");
}

/// f16 inputs are solved in f32, but a solution beyond f16's range (65504) is an error with
/// advice, not an infinite plan: here a relaxed plan of mass exp(60/3) (`log P = -C/(ε + 2ρ)`
/// for one pair of unit masses), which f32 holds. Entries within range are accepted however
/// large their sums.
#[test]
#[cfg_attr(
    feature = "ndarray-tests",
    ignore = "ndarray has no bf16 or f16 tensors"
)]
fn f16_solution_beyond_its_range() {
    for fast_paths in [true, false] {
        let config = UnbalancedConfig::new(1.0, 1.0, 1.0).with_fast_paths(fast_paths);
        let solve = |dtype| {
            unbalanced_sinkhorn(
                tensor::<TestBackend, 3>(vec![-60.0], [1, 1, 1], dtype),
                tensor::<TestBackend, 2>(vec![1.0], [1, 1], dtype),
                tensor::<TestBackend, 2>(vec![1.0], [1, 1], dtype),
                &config,
            )
        };
        assert!(solve(DType::F32).is_ok(), "f32 holds the plan");
        let err = solve(DType::F16).unwrap_err();
        assert!(matches!(err, OtprefError::UnsupportedDType(_)), "{err}");
        assert!(err.to_string().contains("f32 or bf16"), "{err}");

        // Entries within range whose sums are not (64 potentials near 3000): accepted.
        let size = 64;
        let t = sinkhorn(
            tensor::<TestBackend, 3>(vec![3000.0; size * size], [1, size, size], DType::F16),
            tensor::<TestBackend, 2>(vec![1.0 / 64.0; size], [1, size], DType::F16),
            tensor::<TestBackend, 2>(vec![1.0 / 64.0; size], [1, size], DType::F16),
            &SinkhornConfig::new(1.0).with_fast_paths(fast_paths),
        )
        .unwrap();
        let potentials = crate::common::values(t.f.clone() + t.g.clone());
        assert!(
            potentials.iter().all(|v| (v - 3000.0).abs() < 32.0),
            "{potentials:?}"
        );
    }
}
