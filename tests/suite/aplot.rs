//! APLOT margins: range, ordering of hard and easy pairs, agreement with a hand-built OT, and
//! errors.

use crate::common::{tensor, values, TestBackend};
use burn::tensor::{DType, Tensor};
use otpref::{aplot_margins, sinkhorn, AplotConfig, OtprefError, SinkhornConfig};
use proptest::prelude::*;

fn margins(
    hc: &[f64],
    hr: &[f64],
    rc: &[f64],
    rr: &[f64],
    config: &AplotConfig,
) -> Result<Vec<f64>, OtprefError> {
    margins_in(hc, hr, rc, rr, config, DType::F32)
}

fn margins_in(
    hc: &[f64],
    hr: &[f64],
    rc: &[f64],
    rr: &[f64],
    config: &AplotConfig,
    dtype: DType,
) -> Result<Vec<f64>, OtprefError> {
    let batch = rc.len();
    let hidden = hc.len() / batch;
    let margins = aplot_margins(
        tensor::<TestBackend, 2>(hc.to_vec(), [batch, hidden], dtype),
        tensor::<TestBackend, 2>(hr.to_vec(), [batch, hidden], dtype),
        tensor::<TestBackend, 1>(rc.to_vec(), [batch], dtype),
        tensor::<TestBackend, 1>(rr.to_vec(), [batch], dtype),
        config,
    )?;
    assert_eq!(
        margins.dtype(),
        dtype,
        "margins come back in the inputs' dtype"
    );
    Ok(values(margins))
}

/// `values` rounded to `dtype` and read back.
fn rounded(values: &[f64], dtype: DType) -> Vec<f64> {
    crate::common::values(tensor::<TestBackend, 1>(
        values.to_vec(),
        [values.len()],
        dtype,
    ))
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[test]
fn margins_equal_the_row_costs_under_an_independently_built_plan() {
    let hc: [f64; 6] = [1.0, 0.0, 0.3, 0.5, -1.0, 0.2];
    let hr: [f64; 6] = [0.9, 0.1, -0.2, 0.4, 0.0, 1.0];
    let (rc, rr): ([f64; 3], [f64; 3]) = ([0.5, 1.0, -0.3], [0.2, -1.0, 0.1]);
    let gamma = 0.3;
    let mut cost = vec![0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            let (a, b) = (&hc[2 * i..2 * i + 2], &hr[2 * j..2 * j + 2]);
            let cos = (a[0] * b[0] + a[1] * b[1])
                / ((a[0] * a[0] + a[1] * a[1]).sqrt() * (b[0] * b[0] + b[1] * b[1]).sqrt());
            cost[i * 3 + j] =
                gamma * (1.0 + cos) / 2.0 + (1.0 - gamma) * (1.0 - sigmoid((rc[i] - rr[j]).abs()));
        }
    }
    let plan = values(
        sinkhorn(
            tensor::<TestBackend, 3>(cost.clone(), [1, 3, 3], DType::F32),
            Tensor::full([1, 3], 1.0 / 3.0, &Default::default()),
            Tensor::full([1, 3], 1.0 / 3.0, &Default::default()),
            &SinkhornConfig::new(0.1),
        )
        .unwrap()
        .plan,
    );
    let got = margins(&hc, &hr, &rc, &rr, &AplotConfig::new().with_gamma(gamma)).unwrap();
    for i in 0..3 {
        let expected: f64 = (0..3)
            .map(|j| 3.0 * plan[i * 3 + j] * cost[i * 3 + j])
            .sum();
        assert!(
            (got[i] - expected).abs() < 1e-5,
            "{i}: {} vs {expected}",
            got[i]
        );
    }
}

#[test]
fn a_batch_of_one_and_bad_shapes_are_errors() {
    let err = margins(
        &[1.0, 0.0],
        &[0.0, 1.0],
        &[1.0],
        &[0.0],
        &AplotConfig::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least 2 pairs"), "{err}");
    let err = aplot_margins(
        tensor::<TestBackend, 2>(vec![1.0; 4], [2, 2], DType::F32),
        tensor::<TestBackend, 2>(vec![1.0; 6], [2, 3], DType::F32),
        tensor::<TestBackend, 1>(vec![0.0; 2], [2], DType::F32),
        tensor::<TestBackend, 1>(vec![0.0; 2], [2], DType::F32),
        &AplotConfig::new(),
    )
    .unwrap_err();
    assert!(matches!(err, OtprefError::Shape(_)), "{err}");
    let err = margins(
        &[1.0, 0.0, 0.0, 1.0],
        &[0.0, 1.0, 1.0, 0.0],
        &[1.0, 0.0],
        &[0.0, 0.0],
        &AplotConfig::new().with_gamma(1.5),
    )
    .unwrap_err();
    assert!(err.to_string().contains("gamma"), "{err}");
}

proptest! {
    #![proptest_config(crate::common::proptest_config(24))]

    #[test]
    fn margins_lie_in_zero_to_scale_times_max_cost(
        case in otpref::testing::aplot_cases(2..=7, 4, 5.0),
        scale in 0.1f64..4.0,
        gamma in 0.0f64..=1.0,
    ) {
        let config = AplotConfig::new().with_scale(scale).with_gamma(gamma);
        let m = margins(
            &case.chosen_repr,
            &case.rejected_repr,
            &case.chosen_rewards,
            &case.rejected_rewards,
            &config,
        )
        .unwrap();
        for v in m {
            // Every cost is in [0, 1]: margins are convex combinations of a row's costs.
            prop_assert!(v >= -1e-6 && v <= scale * (1.0 + 1e-5), "{}", v);
        }
    }

    #[test]
    fn pairs_closer_in_representation_and_reward_get_larger_margins(
        batch in 3usize..8,
        seed in any::<u64>(),
    ) {
        // Rejected answers cluster around direction e1 with rewards near 0. Chosen 0 sits in
        // that cluster with a reward near 0 (hard); chosen 1 points away with a large reward
        // (easy); the others are random.
        let mut rng = crate::common::Rng(seed);
        let mut hr = Vec::new();
        let mut rr = Vec::new();
        for _ in 0..batch {
            hr.extend([1.0, 0.1 * (rng.next_f64() - 0.5), 0.1 * (rng.next_f64() - 0.5)]);
            rr.push(0.2 * (rng.next_f64() - 0.5));
        }
        let mut hc = vec![1.0, 0.05, 0.0, -1.0, 0.1, 0.0];
        let mut rc = vec![0.05, 6.0];
        for _ in 2..batch {
            hc.extend(rng.vec(3, -1.0, 1.0));
            rc.push(rng.next_f64() * 4.0 - 2.0);
        }
        let m = margins(&hc, &hr, &rc, &rr, &AplotConfig::new()).unwrap();
        prop_assert!(m[0] > m[1], "hard {} vs easy {}", m[0], m[1]);
        for k in 2..batch {
            prop_assert!(m[0] >= m[k] - 1e-6 && m[1] <= m[k] + 1e-6, "{:?}", m);
        }
    }
}

/// An all-zero representation (a pooled state of zeros) has no direction: its cosine terms are
/// 0, and its gradient is finite (zero), not NaN, in the modes that differentiate through the
/// cost.
#[test]
fn an_all_zero_representation_has_a_finite_gradient() {
    use crate::common::TestAutodiff;
    use otpref::GradientMode;
    for mode in [GradientMode::Unrolled, GradientMode::Implicit] {
        let chosen =
            tensor::<TestAutodiff, 2>(vec![0.0, 0.0, 1.0, 2.0], [2, 2], DType::F32).require_grad();
        let rejected = tensor::<TestAutodiff, 2>(vec![1.0, 0.0, 0.5, -1.0], [2, 2], DType::F32);
        let rewards = |v: Vec<f64>| tensor::<TestAutodiff, 1>(v, [2], DType::F32);
        let margins = aplot_margins(
            chosen.clone(),
            rejected,
            rewards(vec![0.3, 1.0]),
            rewards(vec![0.0, -0.5]),
            &AplotConfig::new().with_gradient(mode),
        )
        .unwrap();
        let grads = margins.sum().backward();
        let gradient = values(chosen.grad(&grads).expect("a gradient reaches the input"));
        assert!(
            gradient.iter().all(|g| g.is_finite()),
            "{mode:?}: {gradient:?}"
        );
    }
}

/// f64 inputs are solved in f64 (the uniform masses follow the inputs' dtype), and f16/bf16
/// inputs in f32: each equals the f32 margins of the same (rounded) values, to its precision.
#[test]
fn every_float_dtype_gives_the_f32_margins() {
    let mut rng = crate::common::Rng(12);
    let (hc, hr) = (rng.vec(4 * 3, -1.0, 1.0), rng.vec(4 * 3, -1.0, 1.0));
    let (rc, rr) = (rng.vec(4, -2.0, 2.0), rng.vec(4, -2.0, 2.0));
    let config = AplotConfig::new();
    let dtypes: &[(DType, f64)] = if cfg!(feature = "ndarray-tests") {
        &[(DType::F64, 1e-5)]
    } else {
        &[(DType::F64, 1e-5), (DType::BF16, 2e-2), (DType::F16, 2e-3)]
    };
    for &(dtype, tolerance) in dtypes {
        let inputs: Vec<Vec<f64>> = [&hc, &hr, &rc, &rr]
            .iter()
            .map(|v| rounded(v, dtype))
            .collect();
        let want = margins(&inputs[0], &inputs[1], &inputs[2], &inputs[3], &config).unwrap();
        let got = margins_in(&hc, &hr, &rc, &rr, &config, dtype).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= tolerance * w.abs().max(1.0),
                "{dtype:?}: {got:?} vs {want:?}"
            );
        }
    }
}
