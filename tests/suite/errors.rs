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

/// A mask with no token positions (`[batch, 0]`) or no pairs (`[0, len]`) is an `Empty` error
/// naming the mask, not a panic.
#[test]
fn zero_length_masks() {
    use otpref::{otpo_token_weights, token_weights, OtpoConfig, ResponseTokens, TokenWeighting};
    let hidden = |len| tensor::<TestBackend, 3>(vec![0.5; 2 * len * 4], [2, len, 4], DType::F32);
    let mask = |len| t2(vec![1.0; 2 * len], [2, len]);
    let err =
        otpo_token_weights(hidden(0), hidden(3), mask(0), mask(3), &OtpoConfig::new()).unwrap_err();
    assert!(matches!(err, OtprefError::Empty(_)), "{err}");
    assert!(
        err.to_string().contains("chosen_mask has shape [2, 0]"),
        "{err}"
    );

    let tokens = ResponseTokens {
        chosen_mask: mask(3),
        rejected_mask: mask(0),
        chosen_hidden: None,
        rejected_hidden: None,
    };
    let err = token_weights(&TokenWeighting::Dpo, tokens.clone()).unwrap_err();
    assert!(
        err.to_string().contains("rejected_mask has shape [2, 0]"),
        "{err}"
    );

    let empty = || t2(Vec::new(), [0, 3]);
    let tokens = ResponseTokens {
        chosen_mask: empty(),
        rejected_mask: empty(),
        chosen_hidden: None,
        rejected_hidden: None,
    };
    let err = token_weights(&TokenWeighting::Dpo, tokens.clone()).unwrap_err();
    assert!(err.to_string().contains("the batch is empty"), "{err}");
}

/// Float inputs of one call in different dtypes are a `DTypeMismatch` naming both inputs as the
/// caller wrote them, for every public function (the backends would panic on the arithmetic).
#[test]
fn mixed_float_dtypes() {
    use otpref::{
        aplot_margins, bt_margin_loss, otpo_token_weights, weighted_dpo_loss, AplotConfig,
        BtLossConfig, DpoInputs, DpoLossConfig, OtpoConfig, ReferenceLogps, TokenWeights,
    };
    let f64_2 = |values: Vec<f64>, shape| tensor::<TestBackend, 2>(values, shape, DType::F64);
    let check = |err: OtprefError, odd: &str, first: &str| {
        assert!(matches!(err, OtprefError::DTypeMismatch(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("{odd} is F32")) && text.contains(&format!("{first} is F64")),
            "{text}"
        );
    };

    let err = sinkhorn(
        tensor::<TestBackend, 3>(COST.to_vec(), [1, 2, 2], DType::F64),
        t2(vec![0.5; 2], [1, 2]),
        t2(vec![0.5; 2], [1, 2]),
        &SinkhornConfig::new(0.1),
    )
    .unwrap_err();
    check(err, "a", "cost");

    let err = unbalanced_sinkhorn(
        tensor::<TestBackend, 3>(COST.to_vec(), [1, 2, 2], DType::F64),
        f64_2(vec![0.5; 2], [1, 2]),
        t2(vec![0.5; 2], [1, 2]),
        &UnbalancedConfig::new(0.1, 1.0, 1.0),
    )
    .unwrap_err();
    check(err, "b", "cost");

    let hidden = |dtype| tensor::<TestBackend, 3>(vec![0.5; 2 * 3 * 4], [2, 3, 4], dtype);
    let err = otpo_token_weights(
        hidden(DType::F64),
        hidden(DType::F32),
        f64_2(vec![1.0; 6], [2, 3]),
        f64_2(vec![1.0; 6], [2, 3]),
        &OtpoConfig::new(),
    )
    .unwrap_err();
    check(err, "rejected_hidden", "chosen_hidden");

    let logps = || f64_2(vec![-1.0; 6], [2, 3]);
    let inputs = DpoInputs {
        policy_chosen: logps(),
        policy_rejected: logps(),
        reference: Some(ReferenceLogps {
            chosen: logps(),
            rejected: t2(vec![-1.0; 6], [2, 3]),
        }),
    };
    let weights =
        TokenWeights::from_masks(f64_2(vec![1.0; 6], [2, 3]), f64_2(vec![1.0; 6], [2, 3]));
    let err =
        weighted_dpo_loss(inputs.clone(), weights.clone(), &DpoLossConfig::new()).unwrap_err();
    check(err, "reference.rejected", "policy_chosen");

    let rewards = |dtype| tensor::<TestBackend, 1>(vec![0.5, -0.5], [2], dtype);
    let err = bt_margin_loss(
        rewards(DType::F64),
        rewards(DType::F32),
        None,
        &BtLossConfig::new(),
    )
    .unwrap_err();
    check(err, "rejected rewards", "chosen rewards");

    let repr = || f64_2(vec![1.0, 0.0, 0.0, 1.0], [2, 2]);
    let err = aplot_margins(
        repr(),
        repr(),
        rewards(DType::F64),
        rewards(DType::F32),
        &AplotConfig::new(),
    )
    .unwrap_err();
    check(err, "rejected_rewards", "chosen_repr");
}

/// NaN in a hidden state at a response token is an error naming the tensor and the token, even
/// though a clamp inside the distance would turn it into a finite cost; NaN at a padded token
/// is ignored; states so large that their distances overflow the dtype are an error too.
#[test]
fn otpo_hidden_states_nan_or_overflowing() {
    use otpref::{otpo_token_weights, OtpoConfig};
    let run = |chosen: Vec<f64>| {
        otpo_token_weights(
            tensor::<TestBackend, 3>(chosen, [1, 3, 2], DType::F32),
            tensor::<TestBackend, 3>(vec![0.5, 1.0, -1.0, 0.0], [1, 2, 2], DType::F32),
            t2(vec![1.0, 1.0, 0.0], [1, 3]),
            t2(vec![1.0, 1.0], [1, 2]),
            &OtpoConfig::new(),
        )
    };
    let err = run(vec![0.0, 1.0, f64::NAN, 0.0, 0.0, 0.0]).unwrap_err();
    assert!(matches!(err, OtprefError::NonFinite(_)), "{err}");
    assert!(err.to_string().contains("chosen_hidden[0, 1]"), "{err}");

    let weights = run(vec![0.0, 1.0, 1.0, 0.0, f64::NAN, f64::NAN]).unwrap();
    let chosen = crate::common::values(weights.chosen);
    assert!(
        chosen[..2].iter().all(|w| w.is_finite() && *w > 0.0),
        "{chosen:?}"
    );

    let err = run(vec![0.0, 1.0, 5e18, 0.0, 0.0, 0.0]).unwrap_err();
    assert!(
        err.to_string().contains("too large for distances in F32"),
        "{err}"
    );
    let err = run(vec![0.0, 1.0, 1e20, 0.0, 0.0, 0.0]).unwrap_err();
    assert!(
        err.to_string().contains("squared norm overflows F32"),
        "{err}"
    );
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
/// 1e-3 in bf16), which the balanced check accepts; a real mismatch is still refused.
#[test]
#[cfg_attr(
    feature = "ndarray-tests",
    ignore = "ndarray has no bf16 or f16 tensors"
)]
fn balanced_totals_in_half_precision() {
    for dtype in [DType::BF16, DType::F16] {
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
}

/// Wrapper configs are checked under their own field names: no `rho_a`, `check_every` or
/// `implicit_max_iters` in a message to someone who set `OtpoConfig::marginal_penalty` or
/// `AplotConfig::max_iters`.
#[test]
fn wrapper_configs_are_named_as_the_user_wrote_them() {
    use otpref::{aplot_margins, otpo_token_weights, AplotConfig, OtpoConfig};
    let otpo = |config: OtpoConfig| {
        let hidden = || tensor::<TestBackend, 3>(vec![0.5; 2 * 3 * 2], [2, 3, 2], DType::F32);
        let mask = || t2(vec![1.0; 6], [2, 3]);
        otpo_token_weights(hidden(), hidden(), mask(), mask(), &config)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let aplot = |config: AplotConfig| {
        let repr = || t2(vec![1.0, 0.0, 0.0, 1.0], [2, 2]);
        let rewards = || tensor::<TestBackend, 1>(vec![0.5, -0.5], [2], DType::F32);
        aplot_margins(repr(), repr(), rewards(), rewards(), &config)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let cases = [
        (
            otpo(OtpoConfig::new().with_marginal_penalty(0.0)),
            "OtpoConfig::marginal_penalty",
        ),
        (
            otpo(OtpoConfig::new().with_epsilon(-1.0)),
            "OtpoConfig::epsilon",
        ),
        (
            otpo(OtpoConfig::new().with_max_iters(0)),
            "OtpoConfig::max_iters",
        ),
        (
            aplot(AplotConfig::new().with_max_iters(0)),
            "AplotConfig::max_iters",
        ),
        (
            aplot(AplotConfig::new().with_tolerance(f64::NAN)),
            "AplotConfig::tolerance",
        ),
    ];
    for (message, expected) in cases {
        assert!(message.contains(expected), "{message}");
        for inner in ["rho_a", "check_every", "implicit_max_iters"] {
            assert!(!message.contains(inner), "{message}");
        }
    }
    // The solver's own config names only the field that is wrong.
    let message = message(unbalanced(
        UnbalancedConfig::new(0.1, 1.0, 1.0).with_check_every(0),
    ));
    assert!(!message.contains("max_iters"), "{message}");
}

/// A mask value other than 0 or 1 is an `InvalidMask` error (not an "invalid mass") naming the
/// mask and the position.
#[test]
fn a_mask_that_is_not_zero_or_one() {
    use otpref::{token_weights, ResponseTokens, TokenWeighting};
    let tokens = ResponseTokens {
        chosen_mask: t2(vec![1.0, 0.5, 1.0, 1.0], [2, 2]),
        rejected_mask: t2(vec![1.0; 4], [2, 2]),
        chosen_hidden: None,
        rejected_hidden: None,
    };
    let err = token_weights(&TokenWeighting::Dpo, tokens.clone()).unwrap_err();
    assert!(matches!(err, OtprefError::InvalidMask(_)), "{err}");
    assert!(err.to_string().contains("chosen_mask[0, 1] = 0.5"), "{err}");
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
