//! `otpo_token_weights` and `token_weights`: hidden states and masks.

use super::*;

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
        chosen_logps: None,
        rejected_logps: None,
        chosen_weights: None,
        rejected_weights: None,
    };
    let err = token_weights(&TokenWeighting::Dpo, tokens.clone()).unwrap_err();
    assert!(matches!(err, OtprefError::InvalidMask(_)), "{err}");
    assert!(err.to_string().contains("chosen_mask[0, 1] = 0.5"), "{err}");
}
