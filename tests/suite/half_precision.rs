//! bf16 and f16 inputs are solved in f32 by both solvers (fused and composed): plan,
//! potentials and implicit gradients are those of an f32 solve of the same rounded inputs, up
//! to the rounding of the results to the inputs' dtype.

use crate::common::{pad_batch, tensor, values, Problem, Rng, TestAutodiff};
use burn::tensor::DType;
use otpref::{unbalanced_sinkhorn, GradientMode, UnbalancedConfig};

/// Plan, f, g and the gradient of `<P, W>` with respect to the cost, as f64.
fn solve(
    problems: &[Problem],
    weights: &[f64],
    dtype: DType,
    config: &UnbalancedConfig,
) -> [Vec<f64>; 4] {
    let (cost, a, b) = pad_batch::<TestAutodiff>(problems, 0.0, dtype);
    let cost = cost.require_grad();
    let weights = tensor::<TestAutodiff, 3>(weights.to_vec(), cost.dims(), dtype);
    let t = unbalanced_sinkhorn(cost.clone(), a, b, config).unwrap();
    assert_eq!(t.plan.dtype(), dtype);
    let (plan, f, g) = (values(t.plan.clone()), values(t.f), values(t.g));
    let grads = (t.plan * weights).sum().backward();
    [plan, f, g, values(cost.grad(&grads).unwrap())]
}

/// `values` rounded to `dtype`.
fn rounded(values_f64: &[f64], dtype: DType) -> Vec<f64> {
    values(tensor::<TestAutodiff, 1>(
        values_f64.to_vec(),
        [values_f64.len()],
        dtype,
    ))
}

/// The problems with costs and masses rounded to `dtype`.
fn rounded_problems(problems: &[Problem], dtype: DType) -> Vec<Problem> {
    problems
        .iter()
        .map(|p| Problem {
            cost: rounded(&p.cost, dtype),
            a: rounded(&p.a, dtype),
            b: rounded(&p.b, dtype),
            ..p.clone()
        })
        .collect()
}

#[test]
#[cfg_attr(
    feature = "ndarray-tests",
    ignore = "ndarray has no bf16 or f16 tensors"
)]
fn half_precision_is_solved_in_f32() {
    // Masses that are multiples of 1/16, exact in both dtypes, with equal totals (the f32
    // solve of masses rounded to 8 bits would find their totals unequal).
    let masses = |sixteenths: &[u32]| sixteenths.iter().map(|k| *k as f64 / 16.0).collect();
    let mut rng = Rng(5);
    let problems: Vec<Problem> = [
        (
            masses(&[1, 3, 2, 2, 1, 4, 1, 2]),
            masses(&[2, 2, 2, 2, 2, 2, 2, 2]),
        ),
        (masses(&[4, 4, 2, 4, 2]), masses(&[1, 1, 1, 3, 2, 2, 4, 2])),
        (
            masses(&[2, 2, 2, 2, 2, 2, 2, 2]),
            masses(&[2, 4, 2, 4, 2, 2]),
        ),
    ]
    .into_iter()
    .map(|(a, b): (Vec<f64>, Vec<f64>)| Problem {
        n: a.len(),
        m: b.len(),
        cost: rng.vec(a.len() * b.len(), 0.0, 1.0),
        a,
        b,
    })
    .collect();
    let weights = rng.vec(3 * 8 * 8, -1.0, 1.0);
    // Machine epsilon of each dtype, and its smallest subnormal (f16's plan entries go there).
    for (dtype, epsilon, smallest) in [(DType::BF16, 7.82e-3, 0.0), (DType::F16, 9.77e-4, 6e-8)] {
        let problems = rounded_problems(&problems, dtype);
        let weights = rounded(&weights, dtype);
        for (rho, fast_paths) in [
            (f64::INFINITY, true),
            (f64::INFINITY, false),
            (1.0, true),
            (1.0, false),
        ] {
            let config = UnbalancedConfig::new(0.1, rho, rho)
                .with_gradient(GradientMode::Implicit)
                .with_fast_paths(fast_paths);
            let half = solve(&problems, &weights, dtype, &config);
            let exact = solve(&problems, &weights, DType::F32, &config);
            let context = format!("{dtype:?} rho={rho} fused={fast_paths}");
            for (name, (h, e)) in ["plan", "f", "g"].iter().zip(half.iter().zip(&exact)) {
                for (k, (h, e)) in h.iter().zip(e).enumerate() {
                    assert!(
                        (h - e).abs() <= epsilon * e.abs() + smallest,
                        "{context}: {name}[{k}] = {h}, f32 solve {e}"
                    );
                }
            }
            // The backward sees the rounded plan: gradients agree to its rounding (seen: 0.2 and 0.3
            // of an epsilon).
            let scale = exact[3].iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let worst = half[3]
                .iter()
                .zip(&exact[3])
                .map(|(h, e)| (h - e).abs() / scale)
                .fold(0.0, f64::max);
            assert!(
                worst < 2.0 * epsilon,
                "{context}: cost gradients differ by {worst:e}"
            );
        }
    }
}
