//! The caller's own token weights (`TokenWeighting::Given`): masked to the responses (a NaN
//! left at padding never reaches the loss), checked, and differentiable; the loss and its
//! gradient against the closed form −log σ(β(Σ w_c Δ_c − Σ w_r Δ_r)).

use crate::common::{tensor, values, TestAutodiff, TestBackend};
use burn::tensor::{backend::Backend, DType, Tensor};
use otpref::{
    token_weights, weighted_dpo_loss, DpoInputs, DpoLossConfig, ReferenceLogps, ResponseTokens,
    TokenWeighting,
};

const MASK_C: [f64; 8] = [0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0];
const MASK_R: [f64; 6] = [1.0, 1.0, 0.0, 1.0, 0.0, 0.0];
/// The caller's weights, with junk (NaN, negative) at padded and prompt positions.
const W_C: [f64; 8] = [f64::NAN, 0.5, 2.0, 0.0, -3.0, 1.5, 0.25, f64::NAN];
const W_R: [f64; 6] = [1.0, 0.75, f64::NAN, 3.0, -1.0, f64::INFINITY];

fn tokens<B: Backend>(w_c: Tensor<B, 2>, w_r: Tensor<B, 2>) -> ResponseTokens<B> {
    let t = |v: &[f64], len| tensor::<B, 2>(v.to_vec(), [2, len], DType::F32);
    ResponseTokens::from_masks(t(&MASK_C, 4), t(&MASK_R, 3)).with_weights(w_c, w_r)
}

fn masked(w: &[f64], mask: &[f64]) -> Vec<f64> {
    w.iter()
        .zip(mask)
        .map(|(w, m)| if *m > 0.0 { *w } else { 0.0 })
        .collect()
}

#[test]
fn given_weights_are_the_callers_on_responses_and_zero_elsewhere() {
    let t = |v: &[f64], len| tensor::<TestBackend, 2>(v.to_vec(), [2, len], DType::F32);
    let w = token_weights(&TokenWeighting::Given, tokens(t(&W_C, 4), t(&W_R, 3))).unwrap();
    assert_eq!(values(w.chosen), masked(&W_C, &MASK_C));
    assert_eq!(values(w.rejected), masked(&W_R, &MASK_R));
}

#[test]
fn the_loss_and_its_gradient_to_the_weights_follow_the_closed_form() {
    let beta = 0.5;
    let t = |v: &[f64], len| tensor::<TestAutodiff, 2>(v.to_vec(), [2, len], DType::F32);
    // Per-token policy − reference log-probabilities Δ.
    let delta_c = [0.1, -0.4, 0.3, 0.2, 0.0, -0.2, 0.5, 0.9];
    let delta_r = [-0.3, 0.2, 0.7, 0.1, 0.4, -0.6];
    let w_c = t(&W_C, 4).require_grad();
    let w_r = t(&W_R, 3).require_grad();
    let weights = token_weights(&TokenWeighting::Given, tokens(w_c.clone(), w_r.clone())).unwrap();
    let inputs = DpoInputs {
        policy_chosen: t(&delta_c, 4),
        policy_rejected: t(&delta_r, 3),
        // A reference of zeros: Δ is the policy's log-probabilities.
        reference: Some(ReferenceLogps {
            chosen: t(&[0.0; 8], 4),
            rejected: t(&[0.0; 6], 3),
        }),
    };
    let config = DpoLossConfig::new().with_beta(beta);
    let out = weighted_dpo_loss(inputs, weights, &config).unwrap();
    let grads = out.loss.clone().backward();

    let (wc, wr) = (masked(&W_C, &MASK_C), masked(&W_R, &MASK_R));
    let margin = |k: usize| {
        let c: f64 = (0..4).map(|i| wc[4 * k + i] * delta_c[4 * k + i]).sum();
        let r: f64 = (0..3).map(|i| wr[3 * k + i] * delta_r[3 * k + i]).sum();
        beta * (c - r)
    };
    let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
    let loss = (0..2).map(|k| -sigmoid(margin(k)).ln()).sum::<f64>() / 2.0;
    let got = values(out.loss)[0];
    assert!((got - loss).abs() < 1e-5, "{got} vs {loss}");
    // d loss / d w_c[k, i] = −σ(−m_k) β Δ_c[k, i] / 2 on response tokens, 0 elsewhere.
    let expect = |mask: &[f64], delta: &[f64], len: usize, sign: f64| -> Vec<f64> {
        (0..mask.len())
            .map(|j| {
                let k = j / len;
                if mask[j] > 0.0 {
                    -sign * sigmoid(-margin(k)) * beta * delta[j] / 2.0
                } else {
                    0.0
                }
            })
            .collect()
    };
    let close = |got: Vec<f64>, want: Vec<f64>| {
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    };
    close(
        values(w_c.grad(&grads).unwrap()),
        expect(&MASK_C, &delta_c, 4, 1.0),
    );
    close(
        values(w_r.grad(&grads).unwrap()),
        expect(&MASK_R, &delta_r, 3, -1.0),
    );
}

#[test]
fn bad_given_weights_are_errors_that_name_them() {
    let t = |v: &[f64], len| tensor::<TestBackend, 2>(v.to_vec(), [2, len], DType::F32);
    let masks = || ResponseTokens::from_masks(t(&MASK_C, 4), t(&MASK_R, 3));
    let err = |tokens| {
        token_weights(&TokenWeighting::Given, tokens)
            .unwrap_err()
            .to_string()
    };
    assert!(err(masks()).contains("chosen_weights"));
    let mut negative = W_C;
    negative[2] = -0.5;
    let e = err(tokens(t(&negative, 4), t(&W_R, 3)));
    assert!(
        e.contains("chosen_weights row 0 position 2") && e.contains("-0.5"),
        "{e}"
    );
    let mut nan = W_R;
    nan[3] = f64::NAN;
    let e = err(tokens(t(&W_C, 4), t(&nan, 3)));
    assert!(e.contains("rejected_weights row 1 position 0"), "{e}");
    let e = err(tokens(
        t(&W_C, 4),
        tensor::<TestBackend, 2>(vec![1.0; 4], [2, 2], DType::F32),
    ));
    assert!(e.contains("rejected_weights"), "{e}");
}
