//! OTPO token weights: parity with the released computation (POT 0.9.4 fixture) and the
//! properties the paper's weights must have.

use crate::common::floats;
use crate::common::{tensor, values, Rng, TestBackend};
use burn::tensor::{DType, Tensor};
use otpref::{
    otpo_token_weights, token_weights, CostNormalization, OtpoConfig, OtprefError, ResponseTokens,
    TokenWeighting, WeightBudget,
};
use serde_json::Value;

const FIXTURE: &str = include_str!("../fixtures/otpo_fixture.json");

#[test]
fn weights_match_the_released_otpo_code() {
    let json: Value = serde_json::from_str(FIXTURE).unwrap();
    let chosen = floats(&json["H_chosen"]);
    let rejected = floats(&json["H_rejected"]);
    let mask_c = floats(&json["mask_chosen"]);
    let mask_r = floats(&json["mask_rejected"]);
    let len = mask_c.len();
    let hidden = chosen.len() / len;
    for case in json["cases"].as_array().unwrap() {
        let config = OtpoConfig::new()
            .with_epsilon(case["reg"].as_f64().unwrap())
            .with_marginal_penalty(case["reg_m"].as_f64().unwrap())
            .with_normalization(CostNormalization::Released);
        let w = otpo_token_weights(
            tensor::<TestBackend, 3>(chosen.clone(), [1, len, hidden], DType::F32),
            tensor::<TestBackend, 3>(rejected.clone(), [1, len, hidden], DType::F32),
            tensor::<TestBackend, 2>(mask_c.clone(), [1, len], DType::F32),
            tensor::<TestBackend, 2>(mask_r.clone(), [1, len], DType::F32),
            &config,
        )
        .unwrap();
        for (got, want) in [
            (values(w.chosen), floats(&case["w_chosen"])),
            (values(w.rejected), floats(&case["w_rejected"])),
        ] {
            for (g, e) in got.iter().zip(&want) {
                assert!(
                    (g - e).abs() <= 1e-5 * e.abs().max(1e-3),
                    "reg {} ({}): weight {g} vs released {e}",
                    case["reg"],
                    case["dtype"]
                );
            }
        }
    }
}

struct Batch {
    chosen: Vec<f64>,
    rejected: Vec<f64>,
    mask_c: Vec<f64>,
    mask_r: Vec<f64>,
    shape: (usize, usize, usize, usize),
}

/// Three pairs with different lengths, left padding (prompt) and right padding.
fn batch(seed: u64) -> Batch {
    let (b, lc, lr, h) = (3, 7, 6, 5);
    let mut rng = Rng(seed);
    let spans_c = [(1, 6), (0, 7), (2, 4)];
    let spans_r = [(1, 4), (0, 6), (3, 6)];
    let mask = |spans: &[(usize, usize)], len: usize| -> Vec<f64> {
        spans
            .iter()
            .flat_map(|(s, e)| (0..len).map(move |t| if t >= *s && t < *e { 1.0 } else { 0.0 }))
            .collect()
    };
    Batch {
        chosen: rng.vec(b * lc * h, -2.0, 2.0),
        rejected: rng.vec(b * lr * h, -2.0, 2.0),
        mask_c: mask(&spans_c, lc),
        mask_r: mask(&spans_r, lr),
        shape: (b, lc, lr, h),
    }
}

fn weights(batch: &Batch, config: &OtpoConfig) -> (Vec<f64>, Vec<f64>) {
    let (b, lc, lr, h) = batch.shape;
    let w = otpo_token_weights(
        tensor::<TestBackend, 3>(batch.chosen.clone(), [b, lc, h], DType::F32),
        tensor::<TestBackend, 3>(batch.rejected.clone(), [b, lr, h], DType::F32),
        tensor::<TestBackend, 2>(batch.mask_c.clone(), [b, lc], DType::F32),
        tensor::<TestBackend, 2>(batch.mask_r.clone(), [b, lr], DType::F32),
        config,
    )
    .unwrap();
    (values(w.chosen), values(w.rejected))
}

#[test]
fn weights_sum_to_the_budget_and_vanish_on_padding() {
    let batch = batch(1);
    let (b, lc, lr, _) = batch.shape;
    for (budget, expected) in [
        (WeightBudget::Min, [(3.0, 3.0), (6.0, 6.0), (2.0, 2.0)]),
        (WeightBudget::Max, [(5.0, 5.0), (7.0, 7.0), (3.0, 3.0)]),
        (WeightBudget::Mean, [(4.0, 4.0), (6.5, 6.5), (2.5, 2.5)]),
        (
            WeightBudget::OwnLength,
            [(5.0, 3.0), (7.0, 6.0), (2.0, 3.0)],
        ),
    ] {
        for epsilon in [1.0, 0.1] {
            let config = OtpoConfig::new().with_epsilon(epsilon).with_budget(budget);
            let (wc, wr) = weights(&batch, &config);
            for k in 0..b {
                let row_c = &wc[k * lc..(k + 1) * lc];
                let row_r = &wr[k * lr..(k + 1) * lr];
                let (sum_c, sum_r): (f64, f64) = (row_c.iter().sum(), row_r.iter().sum());
                assert!((sum_c - expected[k].0).abs() < 1e-4, "{budget:?}: {sum_c}");
                assert!((sum_r - expected[k].1).abs() < 1e-4, "{budget:?}: {sum_r}");
                for (w, m) in row_c.iter().zip(&batch.mask_c[k * lc..]) {
                    assert!(*w >= 0.0);
                    if *m == 0.0 {
                        assert_eq!(*w, 0.0);
                    }
                }
                for (w, m) in row_r.iter().zip(&batch.mask_r[k * lr..]) {
                    assert!(*w >= 0.0);
                    if *m == 0.0 {
                        assert_eq!(*w, 0.0);
                    }
                }
            }
        }
    }
}

#[test]
fn identical_responses_get_identical_weights() {
    let mut batch = batch(2);
    let (_, lc, _, h) = batch.shape;
    // Make every rejected response a copy of the chosen one (same length and mask).
    let lr = lc;
    batch.rejected = batch.chosen.clone();
    batch.mask_r = batch.mask_c.clone();
    batch.shape.2 = lr;
    let _ = h;
    let (wc, wr) = weights(&batch, &OtpoConfig::new().with_epsilon(0.1));
    for (c, r) in wc.iter().zip(&wr) {
        assert!((c - r).abs() < 1e-5, "{c} vs {r}");
    }
}

#[test]
fn a_token_far_from_the_other_response_gets_less_weight() {
    // Chosen tokens 0-2 match rejected tokens closely; token 3 is far from all of them.
    let chosen = vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 9.0, -9.0];
    let rejected = vec![0.1, 1.0, 1.0, 0.1, 0.9, 1.0];
    for epsilon in [1.0, 0.1] {
        let w = otpo_token_weights(
            tensor::<TestBackend, 3>(chosen.clone(), [1, 4, 2], DType::F32),
            tensor::<TestBackend, 3>(rejected.clone(), [1, 3, 2], DType::F32),
            Tensor::ones([1, 4], &Default::default()),
            Tensor::ones([1, 3], &Default::default()),
            &OtpoConfig::new().with_epsilon(epsilon),
        )
        .unwrap();
        let wc = values(w.chosen);
        assert!(wc[3] < wc[0].min(wc[1]).min(wc[2]), "eps {epsilon}: {wc:?}");
    }
}

#[test]
fn an_empty_response_is_an_error() {
    let batch = batch(3);
    let (b, lc, lr, h) = batch.shape;
    let mut mask_r = batch.mask_r.clone();
    mask_r[lr..2 * lr].iter_mut().for_each(|m| *m = 0.0);
    let err = otpo_token_weights(
        tensor::<TestBackend, 3>(batch.chosen.clone(), [b, lc, h], DType::F32),
        tensor::<TestBackend, 3>(batch.rejected.clone(), [b, lr, h], DType::F32),
        tensor::<TestBackend, 2>(batch.mask_c.clone(), [b, lc], DType::F32),
        tensor::<TestBackend, 2>(mask_r, [b, lr], DType::F32),
        &OtpoConfig::new(),
    )
    .unwrap_err();
    assert!(matches!(err, OtprefError::Empty(_)), "{err}");
    assert!(err.to_string().contains("row 1"), "{err}");
}

#[test]
fn every_scheme_shares_one_code_path_and_respects_masks() {
    let batch = batch(4);
    let (b, lc, lr, h) = batch.shape;
    let tokens = ResponseTokens {
        chosen_mask: tensor::<TestBackend, 2>(batch.mask_c.clone(), [b, lc], DType::F32),
        rejected_mask: tensor::<TestBackend, 2>(batch.mask_r.clone(), [b, lr], DType::F32),
        chosen_hidden: Some(tensor(batch.chosen.clone(), [b, lc, h], DType::F32)),
        rejected_hidden: Some(tensor(batch.rejected.clone(), [b, lr, h], DType::F32)),
        chosen_logps: None,
        rejected_logps: None,
        chosen_weights: None,
        rejected_weights: None,
    };
    let lens_c = [5.0, 7.0, 2.0];
    let lens_r = [3.0, 6.0, 3.0];
    let sums = |method: &TokenWeighting| -> Vec<(f64, f64)> {
        let w = token_weights(method, tokens.clone()).unwrap();
        let (wc, wr) = (values(w.chosen), values(w.rejected));
        for (w, m) in wc
            .iter()
            .zip(&batch.mask_c)
            .chain(wr.iter().zip(&batch.mask_r))
        {
            assert!(*w >= 0.0 && (*m != 0.0 || *w == 0.0), "{method:?}");
        }
        (0..b)
            .map(|k| {
                (
                    wc[k * lc..(k + 1) * lc].iter().sum(),
                    wr[k * lr..(k + 1) * lr].iter().sum(),
                )
            })
            .collect()
    };
    let close = |x: f64, y: f64| (x - y).abs() < 1e-4;
    for (k, (c, r)) in sums(&TokenWeighting::Dpo).into_iter().enumerate() {
        assert!(close(c, lens_c[k]) && close(r, lens_r[k]));
    }
    for (c, r) in sums(&TokenWeighting::SimPo) {
        assert!(close(c, 1.0) && close(r, 1.0));
    }
    for (k, (c, r)) in sums(&TokenWeighting::SamPo { seed: 7 })
        .into_iter()
        .enumerate()
    {
        let m = lens_c[k].min(lens_r[k]);
        assert!(close(c, m) && close(r, m));
    }
    for (k, (c, r)) in sums(&TokenWeighting::LdDpo { alpha: 0.25 })
        .into_iter()
        .enumerate()
    {
        let m = lens_c[k].min(lens_r[k]);
        assert!(close(c, m + 0.25 * (lens_c[k] - m)) && close(r, m + 0.25 * (lens_r[k] - m)));
    }
    for method in [
        TokenWeighting::Uniform {
            budget: WeightBudget::Min,
        },
        TokenWeighting::Similarity {
            budget: WeightBudget::Min,
        },
        TokenWeighting::Otpo(OtpoConfig::new()),
    ] {
        for (k, (c, r)) in sums(&method).into_iter().enumerate() {
            let m = lens_c[k].min(lens_r[k]);
            assert!(close(c, m) && close(r, m), "{method:?}: {c} {r} vs {m}");
        }
    }
    let no_hidden = ResponseTokens {
        chosen_hidden: None,
        rejected_hidden: None,
        chosen_logps: None,
        rejected_logps: None,
        chosen_weights: None,
        rejected_weights: None,
        ..tokens.clone()
    };
    let err =
        token_weights(&TokenWeighting::Otpo(OtpoConfig::new()), no_hidden.clone()).unwrap_err();
    assert!(err.to_string().contains("hidden states"), "{err}");
}

#[test]
fn weights_are_differentiable_when_asked() {
    use crate::common::TestAutodiff;
    use otpref::GradientMode;
    // Small states keep every distance below 1, so no normalisation kicks in.
    let mut rng = Rng(9);
    let chosen = rng.vec(2 * 4 * 3, -0.2, 0.2);
    let rejected = rng.vec(2 * 3 * 3, -0.2, 0.2);
    let mask_c = vec![1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0];
    let mask_r = vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
    let probe_c = rng.vec(8, -1.0, 1.0);
    let probe_r = rng.vec(6, -1.0, 1.0);
    // Through `otpo_token_weights`, or (`via_scheme`) through `token_weights` with
    // `TokenWeighting::Otpo`, which must pass the gradient mode on.
    let loss = |chosen: Tensor<TestAutodiff, 3>, mode: GradientMode, via_scheme: bool| {
        let config = OtpoConfig::new()
            .with_epsilon(0.5)
            .with_gradient(mode)
            .with_tolerance(1e-12)
            .with_max_iters(10_000);
        let rejected = tensor(rejected.clone(), [2, 3, 3], DType::F64);
        let (chosen_mask, rejected_mask) = (
            tensor(mask_c.clone(), [2, 4], DType::F64),
            tensor(mask_r.clone(), [2, 3], DType::F64),
        );
        let w = if via_scheme {
            let tokens = otpref::ResponseTokens {
                chosen_mask,
                rejected_mask,
                chosen_hidden: Some(chosen),
                rejected_hidden: Some(rejected),
                chosen_logps: None,
                rejected_logps: None,
                chosen_weights: None,
                rejected_weights: None,
            };
            otpref::token_weights(&otpref::TokenWeighting::Otpo(config), tokens.clone())
        } else {
            otpo_token_weights(chosen, rejected, chosen_mask, rejected_mask, &config)
        }
        .unwrap();
        (w.chosen * tensor::<TestAutodiff, 2>(probe_c.clone(), [2, 4], DType::F64)).sum()
            + (w.rejected * tensor::<TestAutodiff, 2>(probe_r.clone(), [2, 3], DType::F64)).sum()
    };
    let direction = rng.vec(chosen.len(), -1.0, 1.0);
    let h = 1e-6;
    let shifted = |sign: f64| -> Vec<f64> {
        chosen
            .iter()
            .zip(&direction)
            .map(|(x, d)| x + sign * h * d)
            .collect()
    };
    let at = |values: Vec<f64>| {
        crate::common::values(loss(
            tensor(values, [2, 4, 3], DType::F64),
            GradientMode::Detach,
            false,
        ))[0]
    };
    let finite_difference = (at(shifted(1.0)) - at(shifted(-1.0))) / (2.0 * h);
    for (mode, via_scheme) in [
        (GradientMode::Unrolled, false),
        (GradientMode::Implicit, false),
        (GradientMode::Unrolled, true),
        (GradientMode::Implicit, true),
    ] {
        let input = tensor::<TestAutodiff, 3>(chosen.clone(), [2, 4, 3], DType::F64).require_grad();
        let grads = loss(input.clone(), mode, via_scheme).backward();
        let grad = crate::common::values(input.grad(&grads).unwrap());
        assert!(grad.iter().all(|g| g.is_finite()));
        let analytic: f64 = grad.iter().zip(&direction).map(|(g, d)| g * d).sum();
        assert!(
            (analytic - finite_difference).abs() < 1e-5 * finite_difference.abs().max(1.0),
            "{mode:?} (via token_weights: {via_scheme}): {analytic} vs {finite_difference}"
        );
    }
    // Detached by default: no gradient reaches the states.
    let input = tensor::<TestAutodiff, 3>(chosen.clone(), [2, 4, 3], DType::F64).require_grad();
    let grads = (loss(input.clone(), GradientMode::Detach, true) + input.clone().sum()).backward();
    assert!(crate::common::values(input.grad(&grads).unwrap())
        .iter()
        .all(|g| *g == 1.0));
}

/// OTPO weights of one batch in the given dtype, as host vectors (chosen, rejected).
fn weights_in(batch: &Batch, config: &OtpoConfig, dtype: DType) -> (Vec<f64>, Vec<f64>) {
    let (b, lc, lr, h) = batch.shape;
    let w = otpo_token_weights(
        tensor::<TestBackend, 3>(batch.chosen.clone(), [b, lc, h], dtype),
        tensor::<TestBackend, 3>(batch.rejected.clone(), [b, lr, h], dtype),
        tensor::<TestBackend, 2>(batch.mask_c.clone(), [b, lc], dtype),
        tensor::<TestBackend, 2>(batch.mask_r.clone(), [b, lr], dtype),
        config,
    )
    .unwrap();
    (values(w.chosen), values(w.rejected))
}

#[test]
fn weights_stay_exact_when_the_plans_mass_underflows() {
    // Equal distances between every chosen and every rejected token: by symmetry each token
    // of a response gets the same share, τ/|y| (τ = min(3, 4) = 3). The plan's entries,
    // about exp(-C/(ε1 + 2ε2)), underflow f32 in both settings: distances of 400 without
    // normalisation, and normalised distances of 1 with ε1 = ε2 = 1e-3. The log-marginals
    // are about -300 there, known to 300·f32::EPSILON ≈ 2e-5 in f32: hence the tolerance.
    let (lc, lr, h) = (3, 4, 2);
    let batch = Batch {
        chosen: vec![0.0; lc * h],
        rejected: [400.0, 0.0].repeat(lr),
        mask_c: vec![1.0; lc],
        mask_r: vec![1.0; lr],
        shape: (1, lc, lr, h),
    };
    for config in [
        OtpoConfig::new().with_normalization(CostNormalization::None),
        OtpoConfig::new()
            .with_epsilon(1e-3)
            .with_marginal_penalty(1e-3),
    ] {
        let (chosen, rejected) = weights(&batch, &config);
        for (got, want) in chosen
            .iter()
            .map(|w| (w, 1.0))
            .chain(rejected.iter().map(|w| (w, 0.75)))
        {
            assert!(
                (got - want).abs() < 1e-4,
                "{config:?}: {chosen:?} {rejected:?}"
            );
        }
    }
}

#[test]
fn f32_weights_match_f64_where_the_f32_plan_underflows() {
    // Hidden states of size ~100 without normalisation: distances of a few hundred, so the
    // plan's mass (~exp(-300/1.4)) underflows f32 but not f64, while the weights, ratios of
    // marginals, are ordinary numbers in both.
    let mut batch = batch(4);
    for x in batch.chosen.iter_mut().chain(batch.rejected.iter_mut()) {
        *x *= 100.0;
    }
    let config = OtpoConfig::new()
        .with_normalization(CostNormalization::None)
        .with_tolerance(1e-9)
        .with_max_iters(20_000);
    let (c32, r32) = weights_in(&batch, &config, DType::F32);
    let (c64, r64) = weights_in(&batch, &config, DType::F64);
    for (got, want) in c32.iter().zip(&c64).chain(r32.iter().zip(&r64)) {
        assert!(got.is_finite(), "{c32:?}");
        assert!(
            (got - want).abs() < 1e-3 * want.abs().max(1.0),
            "f32 {got} vs f64 {want}"
        );
    }
    // And the budgets hold: each pair's weights sum to τ = min(|y_c|, |y_r|).
    let (b, lc, _, _) = batch.shape;
    for k in 0..b {
        let len_c: f64 = batch.mask_c[k * lc..(k + 1) * lc].iter().sum();
        let len_r: f64 = batch.mask_r[k * 6..(k + 1) * 6].iter().sum();
        let total: f64 = c32[k * lc..(k + 1) * lc].iter().sum();
        assert!((total - len_c.min(len_r)).abs() < 1e-4, "pair {k}: {total}");
    }
}

#[test]
fn gradients_stay_finite_when_the_plans_mass_underflows() {
    use crate::common::TestAutodiff;
    use otpref::GradientMode;
    let mut batch = batch(5);
    for x in batch.chosen.iter_mut().chain(batch.rejected.iter_mut()) {
        *x *= 100.0;
    }
    let (b, lc, lr, h) = batch.shape;
    for mode in [GradientMode::Unrolled, GradientMode::Implicit] {
        let config = OtpoConfig::new()
            .with_normalization(CostNormalization::None)
            .with_gradient(mode);
        let chosen =
            tensor::<TestAutodiff, 3>(batch.chosen.clone(), [b, lc, h], DType::F32).require_grad();
        let w = otpo_token_weights(
            chosen.clone(),
            tensor(batch.rejected.clone(), [b, lr, h], DType::F32),
            tensor(batch.mask_c.clone(), [b, lc], DType::F32),
            tensor(batch.mask_r.clone(), [b, lr], DType::F32),
            &config,
        )
        .unwrap();
        let weights = values(w.chosen.clone());
        assert!(
            weights.iter().all(|w| w.is_finite()),
            "{mode:?}: {weights:?}"
        );
        let probe = tensor::<TestAutodiff, 2>(Rng(6).vec(b * lc, -1.0, 1.0), [b, lc], DType::F32);
        let grads = (w.chosen * probe).sum().backward();
        let grad = values(chosen.grad(&grads).unwrap());
        assert!(grad.iter().all(|g| g.is_finite()), "{mode:?}: {grad:?}");
    }
}

#[test]
fn weights_report_how_the_solves_ended() {
    let batch = batch(2);
    let (b, lc, lr, h) = batch.shape;
    let run = |config: &OtpoConfig| {
        otpo_token_weights(
            tensor::<TestBackend, 3>(batch.chosen.clone(), [b, lc, h], DType::F32),
            tensor::<TestBackend, 3>(batch.rejected.clone(), [b, lr, h], DType::F32),
            tensor::<TestBackend, 2>(batch.mask_c.clone(), [b, lc], DType::F32),
            tensor::<TestBackend, 2>(batch.mask_r.clone(), [b, lr], DType::F32),
            config,
        )
        .unwrap()
        .convergence
        .expect("OTPO reports its solves")
    };
    let enough = run(&OtpoConfig::new());
    assert!(enough.all_converged(), "{enough:?}");
    assert!(
        enough.iterations.iter().all(|i| *i > 2 && *i < 1000),
        "{enough:?}"
    );
    assert!(
        enough.marginal_error.iter().all(|e| *e <= 1e-6),
        "{enough:?}"
    );
    let cut_short = run(&OtpoConfig::new().with_max_iters(2));
    assert!(!cut_short.all_converged(), "{cut_short:?}");
    assert_eq!(cut_short.iterations, vec![2; b]);
    // Schemes without a solve report none.
    let tokens = ResponseTokens {
        chosen_mask: tensor::<TestBackend, 2>(batch.mask_c.clone(), [b, lc], DType::F32),
        rejected_mask: tensor::<TestBackend, 2>(batch.mask_r.clone(), [b, lr], DType::F32),
        chosen_hidden: None,
        rejected_hidden: None,
        chosen_logps: None,
        rejected_logps: None,
        chosen_weights: None,
        rejected_weights: None,
    };
    assert!(token_weights(&TokenWeighting::Dpo, tokens.clone())
        .unwrap()
        .convergence
        .is_none());
}

#[test]
fn always_normalised_weights_ignore_the_hidden_states_scale() {
    // With every distance divided by the largest, scaling all hidden states by s changes
    // nothing (up to the 1e-6 offset); `ValidPairs` divides only when the largest distance
    // exceeds 1, so small states (distances < 1) keep their scale and their weights differ.
    let batch = batch(7);
    let scaled = |s: f64| Batch {
        chosen: batch.chosen.iter().map(|x| x * s).collect(),
        rejected: batch.rejected.iter().map(|x| x * s).collect(),
        mask_c: batch.mask_c.clone(),
        mask_r: batch.mask_r.clone(),
        shape: batch.shape,
    };
    let always = OtpoConfig::new()
        .with_epsilon(0.1)
        .with_normalization(CostNormalization::ValidPairsAlways);
    let (large, _) = weights(&scaled(1.0), &always);
    let (small, _) = weights(&scaled(0.01), &always);
    for (l, s) in large.iter().zip(&small) {
        assert!((l - s).abs() < 1e-3, "{large:?} vs {small:?}");
    }
    let above_one = OtpoConfig::new()
        .with_epsilon(0.1)
        .with_normalization(CostNormalization::ValidPairs);
    // Distances above 1: both rules divide by the same max.
    let (paper, _) = weights(&scaled(1.0), &above_one);
    for (l, p) in large.iter().zip(&paper) {
        assert!((l - p).abs() < 1e-5, "{large:?} vs {paper:?}");
    }
    let (paper_small, _) = weights(&scaled(0.01), &above_one);
    let gap = small
        .iter()
        .zip(&paper_small)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(gap > 0.05, "small states: {small:?} vs {paper_small:?}");
}

#[test]
fn padded_hidden_states_may_hold_anything() {
    // NaN and infinities at padded positions change nothing: not the weights (against the
    // same batch with zeros there), not the gradients (finite), in every gradient mode.
    use crate::common::TestAutodiff;
    use otpref::GradientMode;
    let clean = batch(3);
    let (b, lc, lr, h) = clean.shape;
    let mut dirty = Batch {
        chosen: clean.chosen.clone(),
        rejected: clean.rejected.clone(),
        mask_c: clean.mask_c.clone(),
        mask_r: clean.mask_r.clone(),
        shape: clean.shape,
    };
    for (t, valid) in dirty.mask_c.iter().enumerate() {
        if *valid == 0.0 {
            dirty.chosen[t * h..(t + 1) * h].fill(f64::NAN);
        }
    }
    for (t, valid) in dirty.mask_r.iter().enumerate() {
        if *valid == 0.0 {
            dirty.rejected[t * h..(t + 1) * h].fill(f64::INFINITY);
        }
    }
    for normalization in [CostNormalization::ValidPairs, CostNormalization::Released] {
        let config = OtpoConfig::new().with_normalization(normalization);
        let (want_c, want_r) = weights(&clean, &config);
        let (got_c, got_r) = weights(&dirty, &config);
        for (g, w) in got_c.iter().zip(&want_c).chain(got_r.iter().zip(&want_r)) {
            assert!(
                (g - w).abs() < 1e-6,
                "{normalization:?}: {got_c:?} vs {want_c:?}"
            );
        }
    }
    for mode in [GradientMode::Unrolled, GradientMode::Implicit] {
        let chosen =
            tensor::<TestAutodiff, 3>(dirty.chosen.clone(), [b, lc, h], DType::F32).require_grad();
        let w = otpo_token_weights(
            chosen.clone(),
            tensor(dirty.rejected.clone(), [b, lr, h], DType::F32),
            tensor(dirty.mask_c.clone(), [b, lc], DType::F32),
            tensor(dirty.mask_r.clone(), [b, lr], DType::F32),
            &OtpoConfig::new().with_gradient(mode),
        )
        .unwrap();
        let probe = tensor::<TestAutodiff, 2>(Rng(8).vec(b * lc, -1.0, 1.0), [b, lc], DType::F32);
        let grads = (w.chosen * probe).sum().backward();
        let grad = values(chosen.grad(&grads).unwrap());
        assert!(grad.iter().all(|g| g.is_finite()), "{mode:?}: {grad:?}");
    }
}

/// Half-precision hidden states are compared and transported in f32: the weights equal the
/// f32 weights of the same (rounded) states, to the half type's precision, in its dtype.
#[test]
#[cfg_attr(
    feature = "ndarray-tests",
    ignore = "ndarray has no bf16 or f16 tensors"
)]
fn half_precision_states_give_the_f32_weights() {
    let batch = batch(13);
    let (b, lc, lr, h) = batch.shape;
    for (dtype, tolerance) in [(DType::F16, 3e-3), (DType::BF16, 2e-2)] {
        let round = |v: &[f64]| values(tensor::<TestBackend, 1>(v.to_vec(), [v.len()], dtype));
        let reference = Batch {
            chosen: round(&batch.chosen),
            rejected: round(&batch.rejected),
            mask_c: batch.mask_c.clone(),
            mask_r: batch.mask_r.clone(),
            shape: batch.shape,
        };
        let (want_c, want_r) = weights_in(&reference, &OtpoConfig::new(), DType::F32);
        let w = otpo_token_weights(
            tensor::<TestBackend, 3>(batch.chosen.clone(), [b, lc, h], dtype),
            tensor::<TestBackend, 3>(batch.rejected.clone(), [b, lr, h], dtype),
            tensor::<TestBackend, 2>(batch.mask_c.clone(), [b, lc], dtype),
            tensor::<TestBackend, 2>(batch.mask_r.clone(), [b, lr], dtype),
            &OtpoConfig::new(),
        )
        .unwrap();
        assert_eq!(w.chosen.dtype(), dtype);
        let (got_c, got_r) = (values(w.chosen), values(w.rejected));
        for (g, e) in got_c.iter().zip(&want_c).chain(got_r.iter().zip(&want_r)) {
            assert!(
                (g - e).abs() <= tolerance * e.abs().max(1.0),
                "{dtype:?}: {g} vs {e}"
            );
        }
    }
}

#[test]
fn exact_marginals_need_equally_long_responses() {
    // An infinite ε2 makes both marginals exact: responses of different lengths cannot be
    // matched, and the error says so in OTPO's own terms.
    let batch = batch(1);
    let (b, lc, lr, h) = batch.shape;
    let err = otpo_token_weights(
        tensor::<TestBackend, 3>(batch.chosen.clone(), [b, lc, h], DType::F32),
        tensor::<TestBackend, 3>(batch.rejected.clone(), [b, lr, h], DType::F32),
        tensor::<TestBackend, 2>(batch.mask_c.clone(), [b, lc], DType::F32),
        tensor::<TestBackend, 2>(batch.mask_r.clone(), [b, lr], DType::F32),
        &OtpoConfig::new().with_marginal_penalty(f64::INFINITY),
    )
    .unwrap_err();
    assert!(matches!(err, OtprefError::UnequalTotals(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("marginal_penalty") && message.contains("pair 0"),
        "{message}"
    );
    assert!(!message.contains("rho"), "{message}");
}

proptest::proptest! {
    #![proptest_config(crate::common::proptest_config(16))]

    /// Generated pairs of responses (NaN in the padded hidden states): every budget is kept,
    /// the weights are finite, non-negative and 0 on padding.
    #[test]
    fn generated_batches_keep_every_budget(
        case in otpref::testing::otpo_cases(1..=3, 6, 4, 2.0),
        budget in proptest::sample::select(vec![
            WeightBudget::Min, WeightBudget::Mean, WeightBudget::Max, WeightBudget::OwnLength,
        ]),
        epsilon in otpref::testing::epsilons(0.1..=1.0),
    ) {
        let tokens = case.to_tokens::<TestBackend>(f64::NAN, &Default::default());
        let config = OtpoConfig::new().with_epsilon(epsilon).with_budget(budget);
        let weights = otpref::otpo_token_weights(
            tokens.chosen_hidden.unwrap(),
            tokens.rejected_hidden.unwrap(),
            tokens.chosen_mask.clone(),
            tokens.rejected_mask.clone(),
            &config,
        )
        .unwrap();
        otpref::testing::check_weight_budget(
            &weights, tokens.chosen_mask, tokens.rejected_mask, budget, 1e-4,
        )?;
    }
}
