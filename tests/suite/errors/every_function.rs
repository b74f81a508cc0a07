//! What every public function shares: empty masks, mixed dtypes, and messages in the names of
//! the config the user wrote.

use super::*;

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
        chosen_logps: None,
        rejected_logps: None,
        chosen_weights: None,
        rejected_weights: None,
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
        chosen_logps: None,
        rejected_logps: None,
        chosen_weights: None,
        rejected_weights: None,
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
    check(err, "rejected_rewards", "chosen_rewards");

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
