//! `OtBackend::reduce_lines` (log-sum-exps and weighted sums) against sums taken in f64
//! on the host. On the CubeCL backends (CUDA with `gpu-tests`, wgpu with `wgpu-tests`) these
//! are the solver's one-pass kernels; elsewhere the composed ops.
//!
//! The shapes straddle the kernels' cube sizes (32 lanes, 8 groups), and the values test the
//! online log-sum-exp: spreads far beyond f32's `exp` range within a line, maxima at the start,
//! the end or the middle of a line, and padding-like weights of -1e30.

use burn::tensor::DType;
use otpref::{Axis, OtBackend, Reduction};

use crate::common::{tensor, values, Rng, TestAutodiff, TestBackend};

/// One test matrix `[batch, n, m]` and the weights for both axes, as f64.
struct Case {
    shape: [usize; 3],
    matrix: Vec<f64>,
    row_weights: Vec<f64>,
    column_weights: Vec<f64>,
}

fn case(rng: &mut Rng, [batch, n, m]: [usize; 3], spread: f64) -> Case {
    let mut matrix = rng.vec(batch * n * m, -spread, spread);
    // A steep ramp along each row of the first problem: the maximum moves at every entry.
    for i in 0..n {
        for j in 0..m {
            matrix[i * m + j] = 40.0 * j as f64 / m as f64 + (i as f64).sin();
        }
    }
    let mut row_weights = rng.vec(batch * m, -3.0, 3.0);
    let mut column_weights = rng.vec(batch * n, -3.0, 3.0);
    // Padding as the solver writes it: log-mass of -1e30 (never the only entry of a line).
    if m > 1 {
        row_weights[m - 1] = -1e30;
    }
    if n > 1 {
        column_weights[0] = -1e30;
    }
    Case {
        shape: [batch, n, m],
        matrix,
        row_weights,
        column_weights,
    }
}

/// `(log Σ exp(M + w), Σ M w)` over one line, in f64.
fn reference(line: impl Iterator<Item = (f64, f64)> + Clone) -> (f64, f64) {
    let top = line.clone().map(|(v, w)| v + w).fold(f64::MIN, f64::max);
    let sum: f64 = line.clone().map(|(v, w)| (v + w - top).exp()).sum();
    let weighted = line.map(|(v, w)| v * w.max(-1e3)).sum();
    (top + sum.ln(), weighted)
}

fn check<B: OtBackend>(case: &Case) {
    let [batch, n, m] = case.shape;
    let matrix = tensor::<B, 3>(case.matrix.clone(), case.shape, DType::F32);
    // f32 inputs: the reference sees the values the backend sees.
    let matrix_values = values(matrix.clone());
    for axis in [Axis::Rows, Axis::Columns] {
        let (weights, lines, len) = match axis {
            Axis::Rows => (&case.row_weights, n, m),
            Axis::Columns => (&case.column_weights, m, n),
        };
        let weights_tensor =
            tensor::<B, 2>(weights.clone(), [batch, weights.len() / batch], DType::F32);
        let weights = values(weights_tensor.clone());
        let lse = values(
            B::reduce_lines(
                matrix.clone(),
                weights_tensor.clone(),
                axis,
                Reduction::LogSumExp,
            )
            .unwrap(),
        );
        // The weighted sum with the padding weight clipped, so that the sums stay in range.
        let clipped = weights_tensor.clone().clamp_min(-1e3);
        let weighted =
            values(B::reduce_lines(matrix.clone(), clipped, axis, Reduction::WeightedSum).unwrap());
        for p in 0..batch {
            for line in 0..lines {
                let entries = (0..len).map(|k| {
                    let (i, j) = match axis {
                        Axis::Rows => (line, k),
                        Axis::Columns => (k, line),
                    };
                    (matrix_values[(p * n + i) * m + j], weights[p * len + k])
                });
                let (lse_ref, weighted_ref) = reference(entries.clone());
                let scale: f64 = entries.map(|(v, w)| (v * w.max(-1e3)).abs()).sum();
                let at = p * lines + line;
                let what = format!("{axis:?} {line} of problem {p} in {:?}", case.shape);
                assert!(
                    (lse[at] - lse_ref).abs() <= 1e-5 * lse_ref.abs().max(1.0),
                    "log-sum-exp of {what}: {} vs {lse_ref}",
                    lse[at]
                );
                assert!(
                    (weighted[at] - weighted_ref).abs() <= 1e-5 * scale.max(1.0),
                    "weighted sum of {what}: {} vs {weighted_ref}",
                    weighted[at]
                );
            }
        }
    }
}

#[test]
fn reductions_match_f64_sums() {
    let mut rng = Rng(17);
    let shapes = [
        [1, 1, 1],
        [2, 1, 7],
        [3, 7, 1],
        [2, 8, 32],
        [3, 9, 33],
        [2, 31, 65],
        [1, 100, 300],
        [4, 257, 17],
    ];
    for shape in shapes {
        check::<TestBackend>(&case(&mut rng, shape, 1.0));
        // exp(M) alone would overflow and underflow f32 within one line.
        check::<TestBackend>(&case(&mut rng, shape, 300.0));
    }
    // Untracked autodiff tensors (detached solves, OTPO) reach the inner backend's kernels.
    for shape in [[2, 9, 33], [3, 40, 7]] {
        check::<TestAutodiff>(&case(&mut rng, shape, 30.0));
    }
}

#[test]
fn weights_that_do_not_fit_are_errors() {
    let matrix = tensor::<TestBackend, 3>(vec![0.0; 2 * 3 * 4], [2, 3, 4], DType::F32);
    // Rows need [batch, m] = [2, 4]; columns [batch, n] = [2, 3].
    let rows_sized = tensor::<TestBackend, 2>(vec![0.0; 8], [2, 4], DType::F32);
    let columns_sized = tensor::<TestBackend, 2>(vec![0.0; 6], [2, 3], DType::F32);
    for (weights, axis) in [
        (columns_sized.clone(), Axis::Rows),
        (rows_sized.clone(), Axis::Columns),
    ] {
        let lse =
            TestBackend::reduce_lines(matrix.clone(), weights.clone(), axis, Reduction::LogSumExp);
        let sum = TestBackend::reduce_lines(matrix.clone(), weights, axis, Reduction::WeightedSum);
        for result in [lse, sum] {
            let message = result.unwrap_err().to_string();
            assert!(message.contains("must be [batch,"), "{message}");
        }
    }
    let wrong_dtype = tensor::<TestBackend, 2>(vec![0.0; 8], [2, 4], DType::F64);
    let error = TestBackend::reduce_lines(matrix, wrong_dtype, Axis::Rows, Reduction::LogSumExp)
        .unwrap_err();
    assert!(error.to_string().contains("dtype"), "{error}");
}

/// Tracked operands (the unrolled mode) are reduced by ops the graph records: the gradient of
/// `Σ_i LSE_j(M_ij + w_j)` with respect to `M` is the row-wise softmax of `M + w`.
#[test]
fn tracked_operands_are_differentiated() {
    let mut rng = Rng(5);
    let (n, m) = (3, 5);
    let (raw, w) = (rng.vec(n * m, -2.0, 2.0), rng.vec(m, -1.0, 1.0));
    let matrix = tensor::<TestAutodiff, 3>(raw, [1, n, m], DType::F32).require_grad();
    let weights = tensor::<TestAutodiff, 2>(w, [1, m], DType::F32);
    let lse = TestAutodiff::reduce_lines(
        matrix.clone(),
        weights.clone(),
        Axis::Rows,
        Reduction::LogSumExp,
    );
    let grads = lse.unwrap().sum().backward();
    let grad = values(matrix.grad(&grads).unwrap());
    let (m_values, w_values) = (values(matrix.inner()), values(weights.inner()));
    for i in 0..n {
        let scores: Vec<f64> = (0..m).map(|j| m_values[i * m + j] + w_values[j]).collect();
        let total: f64 = scores.iter().map(|s| s.exp()).sum();
        for j in 0..m {
            let softmax = scores[j].exp() / total;
            assert!(
                (grad[i * m + j] - softmax).abs() < 1e-5,
                "({i}, {j}): {} vs {softmax}",
                grad[i * m + j]
            );
        }
    }
}
