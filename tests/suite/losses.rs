//! Preference losses against hand-computed closed forms, finite differences, extreme inputs
//! and bad input.

use crate::common::{tensor, values, TestAutodiff, TestBackend};
use burn::tensor::{DType, Tensor};
use otpref::{
    bt_margin_loss, weighted_dpo_loss, BtLossConfig, DpoInputs, DpoLossConfig, DpoLossType,
    OtprefError, ReferenceLogps, TokenWeights,
};

fn softplus(x: f64) -> f64 {
    // log(1 + e^x), the closed form of −log σ(−x).
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

fn t1<B: burn::tensor::backend::Backend>(v: &[f64]) -> Tensor<B, 1> {
    tensor(v.to_vec(), [v.len()], DType::F64)
}

fn t2<B: burn::tensor::backend::Backend>(v: &[f64], shape: [usize; 2]) -> Tensor<B, 2> {
    tensor(v.to_vec(), shape, DType::F64)
}

#[test]
fn bt_loss_matches_its_closed_form() {
    let (rc, rr, mu) = ([1.0, -0.5, 2.0], [0.0, 0.5, 2.5], [0.3, 0.0, -1.0]);
    for c in [0.0, 0.01] {
        let out = bt_margin_loss(
            t1::<TestBackend>(&rc),
            t1::<TestBackend>(&rr),
            Some(t1::<TestBackend>(&mu)),
            &BtLossConfig::new().with_center_rewards_coefficient(c),
        )
        .unwrap();
        let mut expected = 0.0;
        let mut center = 0.0;
        for i in 0..3 {
            expected += softplus(-(rc[i] - rr[i] - mu[i])) / 3.0;
            center += (rc[i] + rr[i]).powi(2) / 3.0;
        }
        expected += c * center;
        assert!((values(out.loss)[0] - expected).abs() < 1e-12);
        assert!((values(out.accuracy)[0] - 1.0 / 3.0).abs() < 1e-6);
    }
}

#[test]
fn bt_loss_gradient_matches_finite_differences_and_survives_extremes() {
    let (rc, rr, mu) = ([1.0, -0.5, 40.0], [0.0, 0.5, -800.0], [0.3, 0.1, 0.0]);
    let loss_at = |rc: &[f64]| {
        let out = bt_margin_loss(
            t1::<TestBackend>(rc),
            t1::<TestBackend>(&rr),
            Some(t1::<TestBackend>(&mu)),
            &BtLossConfig::new().with_center_rewards_coefficient(0.01),
        )
        .unwrap();
        values(out.loss)[0]
    };
    let chosen = t1::<TestAutodiff>(&rc).require_grad();
    let out = bt_margin_loss(
        chosen.clone(),
        t1::<TestAutodiff>(&rr),
        Some(t1::<TestAutodiff>(&mu)),
        &BtLossConfig::new().with_center_rewards_coefficient(0.01),
    )
    .unwrap();
    let grad = values(chosen.grad(&out.loss.backward()).unwrap());
    for i in 0..3 {
        let h = 1e-6;
        let (mut up, mut down) = (rc, rc);
        up[i] += h;
        down[i] -= h;
        let fd = (loss_at(&up) - loss_at(&down)) / (2.0 * h);
        assert!((fd - grad[i]).abs() < 1e-6, "{i}: {fd} vs {}", grad[i]);
    }
    // Extreme rewards: −log σ(−1000) = 1000 exactly, gradient finite.
    let chosen = t1::<TestAutodiff>(&[-1000.0, 1000.0]).require_grad();
    let out = bt_margin_loss(chosen.clone(), t1(&[0.0, 0.0]), None, &BtLossConfig::new()).unwrap();
    assert!((values(out.loss.clone())[0] - 500.0).abs() < 1e-9);
    let grad = values(chosen.grad(&out.loss.backward()).unwrap());
    assert!(
        (grad[0] + 0.5).abs() < 1e-12 && grad[1].abs() < 1e-12,
        "{grad:?}"
    );
}

#[test]
fn a_margin_of_the_wrong_shape_is_an_error_not_a_broadcast() {
    let err = bt_margin_loss(
        t1::<TestBackend>(&[1.0, 2.0]),
        t1::<TestBackend>(&[0.0, 0.0]),
        Some(t1::<TestBackend>(&[0.5])),
        &BtLossConfig::new(),
    )
    .unwrap_err();
    assert!(matches!(err, OtprefError::Shape(_)) && err.to_string().contains("margin"));
    let err = bt_margin_loss(
        t1::<TestBackend>(&[1.0, f64::NAN]),
        t1::<TestBackend>(&[0.0, 0.0]),
        None,
        &BtLossConfig::new(),
    )
    .unwrap_err();
    assert!(matches!(err, OtprefError::NonFinite(_)));
}

/// Two pairs, chosen length 3 and rejected length 2, with some zero weights (padding).
struct Pairs {
    pc: [f64; 6],
    pr: [f64; 4],
    rc: [f64; 6],
    rr: [f64; 4],
    wc: [f64; 6],
    wr: [f64; 4],
}

const PAIRS: Pairs = Pairs {
    pc: [-1.0, -2.0, -0.5, -0.3, -0.2, -9.0],
    pr: [-1.5, -1.0, -2.0, -0.1],
    rc: [-1.2, -1.9, -0.7, -0.4, -0.2, -3.0],
    rr: [-1.4, -1.1, -1.5, -0.3],
    wc: [1.0, 0.5, 1.5, 1.0, 1.0, 0.0],
    wr: [0.8, 1.2, 2.0, 0.0],
};

/// Δ per pair by hand.
fn deltas(p: &Pairs, with_reference: bool) -> [f64; 2] {
    let mut out = [0.0; 2];
    for (k, d) in out.iter_mut().enumerate() {
        let mut chosen = 0.0;
        for t in 0..3 {
            let r = if with_reference { p.rc[k * 3 + t] } else { 0.0 };
            chosen += p.wc[k * 3 + t] * (p.pc[k * 3 + t] - r);
        }
        let mut rejected = 0.0;
        for t in 0..2 {
            let r = if with_reference { p.rr[k * 2 + t] } else { 0.0 };
            rejected += p.wr[k * 2 + t] * (p.pr[k * 2 + t] - r);
        }
        *d = chosen - rejected;
    }
    out
}

fn dpo<B: burn::tensor::backend::Backend>(
    p: &Pairs,
    policy_chosen: Tensor<B, 2>,
    config: &DpoLossConfig,
    with_reference: bool,
) -> otpref::DpoLoss<B> {
    let inputs = DpoInputs {
        policy_chosen,
        policy_rejected: t2(&p.pr, [2, 2]),
        reference: with_reference.then(|| ReferenceLogps {
            chosen: t2(&p.rc, [2, 3]),
            rejected: t2(&p.rr, [2, 2]),
        }),
    };
    let weights = TokenWeights::from_masks(t2(&p.wc, [2, 3]), t2(&p.wr, [2, 2]));
    weighted_dpo_loss(inputs.clone(), weights.clone(), config).unwrap()
}

#[test]
fn every_dpo_loss_type_matches_its_closed_form() {
    let beta = 0.5;
    let s = 0.1;
    let d = deltas(&PAIRS, true);
    let d_free = deltas(&PAIRS, false);
    type ClosedForm<'a> = Box<dyn Fn(f64) -> f64 + 'a>;
    let cases: Vec<(DpoLossType, f64, bool, ClosedForm)> = vec![
        (
            DpoLossType::Sigmoid,
            0.0,
            true,
            Box::new(|x| softplus(-beta * x)),
        ),
        (
            DpoLossType::Sigmoid,
            s,
            true,
            Box::new(|x| (1.0 - s) * softplus(-beta * x) + s * softplus(beta * x)),
        ),
        (
            DpoLossType::Robust,
            s,
            true,
            Box::new(|x| {
                ((1.0 - s) * softplus(-beta * x) - s * softplus(beta * x)) / (1.0 - 2.0 * s)
            }),
        ),
        (
            DpoLossType::Ipo,
            0.0,
            true,
            Box::new(|x| (x - 1.0 / (2.0 * beta)).powi(2)),
        ),
        (
            DpoLossType::Hinge,
            0.0,
            true,
            Box::new(|x| (1.0 - beta * x).max(0.0)),
        ),
        (
            DpoLossType::SimPo { gamma: 0.7 },
            0.0,
            false,
            Box::new(|x| softplus(-(beta * x - 0.7))),
        ),
    ];
    for (loss_type, smoothing, with_reference, closed_form) in cases {
        let config = DpoLossConfig::new()
            .with_beta(beta)
            .with_loss_type(loss_type)
            .with_label_smoothing(smoothing);
        let out = dpo::<TestBackend>(&PAIRS, t2(&PAIRS.pc, [2, 3]), &config, with_reference);
        let d = if with_reference { d } else { d_free };
        let expected = (closed_form(d[0]) + closed_form(d[1])) / 2.0;
        let got = values(out.loss)[0];
        assert!(
            (got - expected).abs() < 1e-12,
            "{loss_type:?}: {got} vs {expected}"
        );
    }
    // Metrics of the default loss.
    let out = dpo::<TestBackend>(
        &PAIRS,
        t2(&PAIRS.pc, [2, 3]),
        &DpoLossConfig::new().with_beta(beta),
        true,
    );
    let margins = values(out.reward_margins);
    for k in 0..2 {
        assert!((margins[k] - beta * d[k]).abs() < 1e-12);
    }
    let chosen_logps = values(out.chosen_logps);
    assert!((chosen_logps[0] - (-1.0 - 1.0 - 0.75)).abs() < 1e-12);
    let accuracy = values(out.accuracy)[0];
    let expected = d.iter().filter(|x| **x > 0.0).count() as f64 / 2.0;
    assert!((accuracy - expected).abs() < 1e-6);
}

#[test]
fn dpo_gradients_match_finite_differences() {
    for loss_type in [
        DpoLossType::Sigmoid,
        DpoLossType::Ipo,
        DpoLossType::Robust,
        DpoLossType::SimPo { gamma: 0.3 },
    ] {
        let config = DpoLossConfig::new()
            .with_beta(0.3)
            .with_loss_type(loss_type)
            .with_label_smoothing(if loss_type == DpoLossType::Robust {
                0.2
            } else {
                0.0
            });
        let with_reference = !matches!(loss_type, DpoLossType::SimPo { .. });
        let policy = t2::<TestAutodiff>(&PAIRS.pc, [2, 3]).require_grad();
        let out = dpo(&PAIRS, policy.clone(), &config, with_reference);
        let grad = values(policy.grad(&out.loss.backward()).unwrap());
        for i in 0..6 {
            let h = 1e-6;
            let at = |delta: f64| {
                let mut pc = PAIRS.pc;
                pc[i] += delta;
                values(dpo::<TestBackend>(&PAIRS, t2(&pc, [2, 3]), &config, with_reference).loss)[0]
            };
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() < 1e-6,
                "{loss_type:?} {i}: {fd} vs {}",
                grad[i]
            );
        }
        // Padded tokens (weight 0) get zero gradient.
        assert_eq!(grad[5], 0.0);
    }
}

#[test]
fn dpo_survives_long_sequences_and_large_log_probabilities() {
    // 4096 tokens of log-probability −50 each: Δ in the hundreds of thousands.
    let len = 4096;
    let inputs = DpoInputs {
        policy_chosen: Tensor::<TestAutodiff, 2>::full([1, len], -1.0, &Default::default())
            .require_grad(),
        policy_rejected: Tensor::full([1, len], -50.0, &Default::default()),
        reference: Some(ReferenceLogps {
            chosen: Tensor::full([1, len], -50.0, &Default::default()),
            rejected: Tensor::full([1, len], -1.0, &Default::default()),
        }),
    };
    let ones = || Tensor::ones([1, len], &Default::default());
    let weights = TokenWeights::from_masks(ones(), ones());
    for sign in [1.0, -1.0] {
        let config = DpoLossConfig::new().with_beta(sign);
        if sign < 0.0 {
            assert!(weighted_dpo_loss(inputs.clone(), weights.clone(), &config).is_err());
            continue;
        }
        let out = weighted_dpo_loss(inputs.clone(), weights.clone(), &config).unwrap();
        let loss = values(out.loss.clone())[0];
        assert!(loss.is_finite() && loss >= 0.0);
        let grad = values(inputs.policy_chosen.grad(&out.loss.backward()).unwrap());
        assert!(grad.iter().all(|g| g.is_finite()));
    }
    // The reverse: a hopeless pair has a huge but finite loss and a bounded gradient.
    let reference = inputs.reference.clone().unwrap();
    let flipped = DpoInputs {
        policy_chosen: reference.chosen.clone().require_grad(),
        policy_rejected: reference.rejected.clone(),
        reference: Some(ReferenceLogps {
            chosen: reference.rejected,
            rejected: reference.chosen,
        }),
    };
    let out = weighted_dpo_loss(flipped.clone(), weights.clone(), &DpoLossConfig::new()).unwrap();
    let loss = values(out.loss.clone())[0];
    assert!(loss.is_finite() && loss > 1e4, "{loss}");
    let grad = values(flipped.policy_chosen.grad(&out.loss.backward()).unwrap());
    // d loss / d logp = −β σ(−βΔ) w → −0.1 per token.
    assert!(
        grad.iter().all(|g| (g + 0.1).abs() < 1e-6),
        "{:?}",
        &grad[..3]
    );
}

#[test]
fn dpo_rejects_bad_input() {
    let weights =
        TokenWeights::<TestBackend>::from_masks(t2(&PAIRS.wc, [2, 3]), t2(&PAIRS.wr[..2], [1, 2]));
    let inputs = DpoInputs {
        policy_chosen: t2(&PAIRS.pc, [2, 3]),
        policy_rejected: t2(&PAIRS.pr, [2, 2]),
        reference: None,
    };
    let err =
        weighted_dpo_loss(inputs.clone(), weights.clone(), &DpoLossConfig::new()).unwrap_err();
    assert!(err.to_string().contains("weights.rejected"), "{err}");
    let weights =
        TokenWeights::<TestBackend>::from_masks(t2(&PAIRS.wc, [2, 3]), t2(&PAIRS.wr, [2, 2]));
    let err =
        weighted_dpo_loss(inputs.clone(), weights.clone(), &DpoLossConfig::new()).unwrap_err();
    assert!(err.to_string().contains("reference"), "{err}");
    let config = DpoLossConfig::new().with_label_smoothing(0.5);
    let with_ref = DpoInputs {
        reference: Some(ReferenceLogps {
            chosen: t2(&PAIRS.rc, [2, 3]),
            rejected: t2(&PAIRS.rr, [2, 2]),
        }),
        ..inputs
    };
    let err = weighted_dpo_loss(with_ref.clone(), weights.clone(), &config).unwrap_err();
    assert!(err.to_string().contains("label_smoothing"), "{err}");
}

#[test]
fn simpo_refuses_a_reference() {
    let inputs = DpoInputs::<TestBackend> {
        policy_chosen: t2(&PAIRS.pc, [2, 3]),
        policy_rejected: t2(&PAIRS.pr, [2, 2]),
        reference: Some(ReferenceLogps {
            chosen: t2(&PAIRS.rc, [2, 3]),
            rejected: t2(&PAIRS.rr, [2, 2]),
        }),
    };
    let weights = TokenWeights::from_masks(t2(&PAIRS.wc, [2, 3]), t2(&PAIRS.wr, [2, 2]));
    let config = DpoLossConfig::new().with_loss_type(DpoLossType::SimPo { gamma: 0.5 });
    let err = weighted_dpo_loss(inputs.clone(), weights.clone(), &config).unwrap_err();
    assert!(
        matches!(&err, OtprefError::InvalidParameter(m) if m.contains("reference")),
        "{err}"
    );
    let reference_free = DpoInputs {
        reference: None,
        ..inputs
    };
    assert!(weighted_dpo_loss(reference_free.clone(), weights.clone(), &config).is_ok());
}

/// DPO in bf16 is computed in f32: the loss (an f32 tensor) equals the f32 loss of the same
/// rounded inputs.
#[test]
#[cfg_attr(
    feature = "ndarray-tests",
    ignore = "ndarray has no bf16 or f16 tensors"
)]
fn half_precision_dpo_is_computed_in_f32() {
    let inputs = |dtype| DpoInputs::<TestBackend> {
        policy_chosen: tensor(PAIRS.pc.to_vec(), [2, 3], dtype),
        policy_rejected: tensor(PAIRS.pr.to_vec(), [2, 2], dtype),
        reference: Some(ReferenceLogps {
            chosen: tensor(PAIRS.rc.to_vec(), [2, 3], dtype),
            rejected: tensor(PAIRS.rr.to_vec(), [2, 2], dtype),
        }),
    };
    let weights = |dtype| {
        TokenWeights::from_masks(
            tensor(PAIRS.wc.to_vec(), [2, 3], dtype),
            tensor(PAIRS.wr.to_vec(), [2, 2], dtype),
        )
    };
    let half = inputs(DType::BF16);
    let round = |t: Tensor<TestBackend, 2>| {
        let dims = t.dims();
        tensor::<TestBackend, 2>(values(t), dims, DType::F32)
    };
    let rounded = DpoInputs {
        policy_chosen: round(half.policy_chosen.clone()),
        policy_rejected: round(half.policy_rejected.clone()),
        reference: half.reference.clone().map(|r| ReferenceLogps {
            chosen: round(r.chosen),
            rejected: round(r.rejected),
        }),
    };
    let rounded_weights = weights(DType::BF16);
    let rounded_weights = TokenWeights::from_masks(
        round(rounded_weights.chosen),
        round(rounded_weights.rejected),
    );
    let config = DpoLossConfig::new();
    let got = weighted_dpo_loss(half, weights(DType::BF16), &config)
        .unwrap()
        .loss;
    assert_eq!(got.dtype(), DType::F32);
    let want = weighted_dpo_loss(rounded, rounded_weights, &config)
        .unwrap()
        .loss;
    let (got, want) = (values(got)[0], values(want)[0]);
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

proptest::proptest! {
    #![proptest_config(crate::common::proptest_config(24))]

    /// Generated batches (log-probabilities of -1e4 at padded positions): the sigmoid loss is
    /// the closed form mean_k softplus(-β Σ_t ω (Δ log π)) over the real tokens, and its
    /// gradient matches finite differences.
    #[test]
    fn weighted_dpo_loss_is_its_closed_form_on_generated_batches(
        case in otpref::testing::dpo_cases(1..=3, 5),
        beta in 0.05f64..1.0,
    ) {
        let device = Default::default();
        let config = DpoLossConfig::new().with_beta(beta);
        let (inputs, weights) = case.to_inputs::<TestBackend>(&device);
        let loss = values(weighted_dpo_loss(inputs, weights, &config).unwrap().loss)[0];
        let len = case.len;
        let reward = |policy: &[f64], reference: &[f64], w: &[f64], k: usize, n: usize| -> f64 {
            (k * len..k * len + n).map(|t| w[t] * (policy[t] - reference[t])).sum::<f64>()
        };
        let expected: f64 = case.lengths.iter().enumerate().map(|(k, (c, r))| {
            let chosen = reward(&case.policy_chosen, &case.reference_chosen, &case.weights_chosen, k, *c);
            let rejected =
                reward(&case.policy_rejected, &case.reference_rejected, &case.weights_rejected, k, *r);
            softplus(-beta * (chosen - rejected))
        }).sum::<f64>() / case.batch() as f64;
        proptest::prop_assert!((loss - expected).abs() < 1e-4 * expected.max(1.0), "{} vs {}", loss, expected);

        let (inputs, weights) = case.to_inputs::<TestBackend>(&device);
        let loss_of_policy_chosen = |policy_chosen: Tensor<TestAutodiff, 2>| {
            let inputs = DpoInputs {
                policy_chosen,
                policy_rejected: Tensor::from_inner(inputs.policy_rejected.clone()),
                reference: inputs.reference.clone().map(|r| ReferenceLogps {
                    chosen: Tensor::from_inner(r.chosen),
                    rejected: Tensor::from_inner(r.rejected),
                }),
            };
            let weights = TokenWeights {
                chosen: Tensor::from_inner(weights.chosen.clone()),
                rejected: Tensor::from_inner(weights.rejected.clone()),
                convergence: None,
            };
            weighted_dpo_loss(inputs, weights, &config).unwrap().loss
        };
        otpref::testing::check_gradient(loss_of_policy_chosen, inputs.policy_chosen.clone(), 1e-2, 2e-2)?;
    }
}
