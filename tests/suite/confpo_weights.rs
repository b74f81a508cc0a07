//! ConfPO's token selection against its closed form (the rule of the authors' released code,
//! `cpo_loss_confpo`: critical tokens have a probability below the response's mean
//! probability; SimPO's loss averages over them; pairs with no critical token carry no loss).

use crate::common::{tensor, values, TestBackend};
use burn::tensor::{DType, Tensor};
use otpref::{
    token_weights, weighted_dpo_loss, DpoInputs, DpoLossConfig, DpoLossType, ResponseTokens,
    TokenWeighting,
};

/// Probabilities (0 = padding) of two pairs; pair 1's rejected response has equal
/// probabilities, so it has no critical token.
const CHOSEN: [[f64; 5]; 2] = [[0.0, 0.9, 0.5, 0.1, 0.7], [0.0, 0.3, 0.8, 0.0, 0.0]];
const REJECTED: [[f64; 4]; 2] = [[0.6, 0.05, 0.4, 0.0], [0.2, 0.2, 0.2, 0.0]];

fn rows<const N: usize>(probs: &[[f64; N]; 2]) -> (Vec<f64>, Vec<f64>) {
    let flat = || probs.iter().flatten();
    let mask = flat().map(|p| f64::from(*p > 0.0)).collect();
    // Padded positions hold a log-probability too (anything finite); it must be ignored.
    let logps = flat()
        .map(|p| if *p > 0.0 { p.ln() } else { -0.01 })
        .collect();
    (mask, logps)
}

fn tokens() -> ResponseTokens<TestBackend> {
    let (mask_c, logps_c) = rows(&CHOSEN);
    let (mask_r, logps_r) = rows(&REJECTED);
    let t = |v: Vec<f64>, len| tensor::<TestBackend, 2>(v, [2, len], DType::F32);
    ResponseTokens {
        chosen_logps: Some(t(logps_c, 5)),
        rejected_logps: Some(t(logps_r, 4)),
        ..ResponseTokens::from_masks(t(mask_c, 5), t(mask_r, 4))
    }
}

/// The closed form: per position, whether it is a valid token below the row's mean probability.
fn critical(row: &[f64]) -> Vec<bool> {
    critical_of(row).iter().map(Option::is_some).collect()
}

fn expected<const N: usize>(probs: &[[f64; N]; 2], keep: [bool; 2], normalized: bool) -> Vec<f64> {
    probs
        .iter()
        .zip(keep)
        .flat_map(|(row, keep)| {
            let picked = critical(row);
            let count = picked.iter().filter(|c| **c).count() as f64;
            let w = if normalized { 1.0 / count } else { 1.0 };
            picked
                .into_iter()
                .map(move |c| if c && keep { w } else { 0.0 })
        })
        .collect()
}

#[test]
fn confpo_weighs_the_tokens_below_the_mean_probability() {
    // Pair 0: chosen mean 0.55 picks 0.5 and 0.1; rejected mean 0.35 picks 0.05. Pair 1: the
    // rejected response has none, so the whole pair weighs 0.
    assert_eq!(critical(&CHOSEN[0]), [false, false, true, true, false]);
    for normalized in [false, true] {
        let method = TokenWeighting::ConfPo {
            length_normalized: normalized,
        };
        let w = token_weights(&method, tokens()).unwrap();
        let close = |got: Vec<f64>, want: Vec<f64>| {
            assert_eq!(got.len(), want.len());
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 1e-6, "{method:?}: {got:?} vs {want:?}");
            }
        };
        close(
            values(w.chosen),
            expected(&CHOSEN, [true, false], normalized),
        );
        close(
            values(w.rejected),
            expected(&REJECTED, [true, false], normalized),
        );
    }
}

#[test]
fn confpo_with_simpo_gives_the_released_codes_loss() {
    // cpo_loss_confpo with loss_type "simpo": mean over critical tokens of each response,
    // logits = mean_c − mean_r − γ/β, loss = −log σ(β logits), 0 for pairs without critical
    // tokens; the batch loss is the mean over pairs.
    let (beta, gamma) = (2.0, 0.5);
    let mean_critical = |row: &[f64]| {
        let picked: Vec<f64> = critical_of(row).into_iter().flatten().collect();
        picked.iter().map(|p| p.ln()).sum::<f64>() / picked.len() as f64
    };
    let delta = mean_critical(&CHOSEN[0]) - mean_critical(&REJECTED[0]);
    let pair0 = -(1.0 / (1.0 + (-(beta * delta - gamma)).exp())).ln();
    // Our pair 1 has Δ = 0 (both rows weigh 0): loss −log σ(−γ), no gradient.
    let pair1 = -(1.0 / (1.0 + gamma.exp())).ln();
    let tokens = tokens();
    let weights = token_weights(
        &TokenWeighting::ConfPo {
            length_normalized: true,
        },
        tokens.clone(),
    )
    .unwrap();
    let inputs = DpoInputs {
        policy_chosen: tokens.chosen_logps.unwrap(),
        policy_rejected: tokens.rejected_logps.unwrap(),
        reference: None,
    };
    let config = DpoLossConfig::new()
        .with_beta(beta)
        .with_loss_type(DpoLossType::SimPo { gamma });
    let out = weighted_dpo_loss(inputs, weights, &config).unwrap();
    let loss = values(out.loss)[0];
    assert!(
        (loss - (pair0 + pair1) / 2.0).abs() < 1e-5,
        "{loss} vs {}",
        (pair0 + pair1) / 2.0
    );
}

/// The critical probabilities of a row (`None` elsewhere).
fn critical_of(row: &[f64]) -> Vec<Option<f64>> {
    let valid: Vec<f64> = row.iter().copied().filter(|p| *p > 0.0).collect();
    let mean = valid.iter().sum::<f64>() / valid.len() as f64;
    row.iter()
        .map(|p| (*p > 0.0 && *p < mean).then_some(*p))
        .collect()
}

#[test]
fn confpo_without_log_probabilities_is_an_error() {
    let t = tokens();
    let tokens = ResponseTokens::from_masks(t.chosen_mask, t.rejected_mask);
    let method = TokenWeighting::ConfPo {
        length_normalized: true,
    };
    let err = token_weights(&method, tokens).unwrap_err().to_string();
    assert!(err.contains("chosen_logps"), "{err}");
}

#[test]
fn confpo_rejects_non_finite_log_probabilities_at_response_tokens() {
    let mut t = tokens();
    let bad = Tensor::<TestBackend, 2>::from_floats(
        [
            [0.0, f32::NEG_INFINITY, -0.5, -1.0, -0.2],
            [0.0, -1.0, -0.1, 0.0, 0.0],
        ],
        &Default::default(),
    );
    t.chosen_logps = Some(bad);
    let method = TokenWeighting::ConfPo {
        length_normalized: false,
    };
    let err = token_weights(&method, t).unwrap_err().to_string();
    assert!(err.contains("chosen_logps row 0"), "{err}");
}
