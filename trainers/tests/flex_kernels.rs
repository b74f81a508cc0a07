//! The element-wise kernels of the patched burn-flex (`patches/burn-flex`: loops split over
//! rayon's pool, transposed operands read in cache tiles, aligned fresh buffers), at sizes that
//! take the parallel paths and at ragged sizes, against plain Rust loops over the same values.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};

type B = Flex;

/// `rows × cols` values in [-2, 2) from a fixed linear congruential stream.
fn values(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..rows * cols)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn tensor(data: &[f32], rows: usize, cols: usize) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(data.to_vec(), [rows, cols]),
        &Default::default(),
    )
}

fn read(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// `a[r][c]` of a row-major `rows × cols` matrix, transposed: `cols × rows`.
fn transposed(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| a[r * cols + c]))
        .collect()
}

// Large enough for the parallel paths (256 Ki elements), ragged against the 64-element chunks
// and 32-wide tiles; and small.
const SHAPES: [(usize, usize); 3] = [(700, 517), (7, 9), (1024, 300)];

#[test]
fn binary_ops_match_plain_loops_in_place_and_allocating() {
    type Op = (
        fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
        fn(f32, f32) -> f32,
    );
    let ops: [Op; 4] = [
        (|a, b| a + b, |a, b| a + b),
        (|a, b| a - b, |a, b| a - b),
        (|a, b| a * b, |a, b| a * b),
        (|a, b| a / b, |a, b| a / b),
    ];
    for (rows, cols) in SHAPES {
        let (a, b) = (values(rows, cols, 1), values(rows, cols, 2));
        for (op, plain) in ops {
            let expected: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| plain(x, y)).collect();
            // A unique left operand is updated in place; a shared one makes a new buffer.
            let in_place = op(tensor(&a, rows, cols), tensor(&b, rows, cols));
            let shared = tensor(&a, rows, cols);
            let allocating = op(shared.clone(), tensor(&b, rows, cols));
            assert_eq!(read(in_place), expected, "{rows}x{cols} in place");
            assert_eq!(read(allocating), expected, "{rows}x{cols} allocating");
            assert_eq!(read(shared), a, "the shared operand is unchanged");
        }
    }
}

#[test]
fn a_transposed_operand_matches_plain_loops() {
    for (rows, cols) in SHAPES {
        // `lhs` is the transpose of a `cols × rows` matrix: strided, read in tiles.
        let stored = values(cols, rows, 3);
        let lhs = transposed(&stored, cols, rows);
        let rhs = values(rows, cols, 4);
        let sum = tensor(&stored, cols, rows).transpose() + tensor(&rhs, rows, cols);
        let expected: Vec<f32> = lhs.iter().zip(&rhs).map(|(&x, &y)| x + y).collect();
        assert_eq!(read(sum), expected, "{rows}x{cols}");
        let greater = tensor(&stored, cols, rows)
            .transpose()
            .greater(tensor(&rhs, rows, cols));
        let expected: Vec<bool> = lhs.iter().zip(&rhs).map(|(&x, &y)| x > y).collect();
        let got = greater.into_data().to_vec::<bool>().unwrap();
        assert_eq!(got, expected, "{rows}x{cols} comparison");
    }
}

#[test]
fn scalar_and_unary_ops_match_plain_loops() {
    for (rows, cols) in SHAPES {
        let a = values(rows, cols, 5);
        let scaled: Vec<f32> = a.iter().map(|&x| x * 0.37).collect();
        let shifted: Vec<f32> = a.iter().map(|&x| x + 1.5).collect();
        let exp: Vec<f32> = a.iter().map(|&x| x.exp()).collect();
        let shared = tensor(&a, rows, cols);
        assert_eq!(read(tensor(&a, rows, cols).mul_scalar(0.37)), scaled);
        assert_eq!(read(shared.clone().mul_scalar(0.37)), scaled);
        assert_eq!(read(shared.clone().add_scalar(1.5)), shifted);
        assert_eq!(read(tensor(&a, rows, cols).exp()), exp);
        assert_eq!(read(shared.clone().exp()), exp);
        // A view at an offset (one contiguous block) takes the allocating unary path.
        let tail = shared.clone().slice([1..rows, 0..cols]).exp();
        assert_eq!(read(tail), exp[cols..].to_vec());
        assert_eq!(read(shared), a);
    }
}

#[test]
fn fresh_buffers_are_zero_for_every_dtype_size() {
    for len in [1, 3, 4, 5, 16, 17, 4096 + 3] {
        let zeros = Tensor::<B, 1>::zeros([len], &Default::default());
        assert!(read(zeros.reshape([1, len])).iter().all(|&x| x == 0.0));
        let ints = Tensor::<B, 1, burn::tensor::Int>::zeros([len], &Default::default());
        let ints = ints.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        assert!(ints.iter().all(|&x| x == 0));
    }
}

#[test]
fn permuted_views_are_made_contiguous_as_plain_loops_read_them() {
    // `[a, b, c, d]` permuted to `[a, c, b, d]` (the innermost axis stays: copied run by run).
    let (a, b, c, d) = (6, 50, 7, 160);
    let data = values(a * b * c, d, 6);
    let t = Tensor::<B, 4>::from_data(
        TensorData::new(data.clone(), [a, b, c, d]),
        &Default::default(),
    );
    let got = t.permute([0, 2, 1, 3]).reshape([a * c * b, d]);
    let mut expected = Vec::new();
    for i in 0..a {
        for k in 0..c {
            for j in 0..b {
                let start = ((i * b + j) * c + k) * d;
                expected.extend_from_slice(&data[start..start + d]);
            }
        }
    }
    assert_eq!(read(got), expected);
}

#[test]
fn matrix_products_match_plain_loops() {
    // On 2 and 3 threads (the split's bands depend on the pool): small products; large enough
    // to be split over threads by hand: one-row products (burn-flex's own row loop: 16-row
    // passes, 64-wide blocks, a ragged tail; a single partial pass; bands narrower than one
    // block), few-row ones split by columns, a thin one split by rows, ragged against the
    // bands; and `k = 0`.
    let shapes = [
        (33, 17, 65),
        (64, 128, 96),
        (1, 600, 1000),
        (1, 5, 60000),
        (1, 2048, 130),
        (4, 300, 703),
        (1000, 300, 3),
        (5, 0, 3),
    ];
    for threads in [2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (m, k, n) in shapes {
            pool.install(|| products_match_plain_loops(m, k, n));
        }
    }
}

/// `m × k` times `k × n` against an f64 loop: plain operands, a transposed right-hand side, and
/// a left-hand side whose rows are read with a stride (beside a decoy column).
fn products_match_plain_loops(m: usize, k: usize, n: usize) {
    let (lhs, rhs) = (values(m, k, 7), values(k, n, 8));
    // Each element and the sum of its terms' magnitudes (f32 rounding grows with it).
    let mut expected = vec![(0.0f64, 0.0f64); m * n];
    for i in 0..m {
        for j in 0..n {
            let terms = (0..k).map(|l| lhs[i * k + l] as f64 * rhs[l * n + j] as f64);
            expected[i * n + j] =
                terms.fold((0.0, 0.0), |(sum, size), t| (sum + t, size + t.abs()));
        }
    }
    let stored_rhs = transposed(&rhs, k, n);
    // `k × (m + 1)`: the left-hand side's transpose, then a decoy column; read back as the
    // first `m` rows of its transpose, a row's elements are `m + 1` apart.
    let lhs_values = &lhs;
    let wide: Vec<f32> = (0..k)
        .flat_map(|l| (0..=m).map(move |i| if i < m { lhs_values[i * k + l] } else { 9.0 }))
        .collect();
    let strided_lhs = tensor(&wide, k, m + 1).transpose().slice([0..m, 0..k]);
    let products = [
        tensor(&lhs, m, k).matmul(tensor(&rhs, k, n)),
        tensor(&lhs, m, k).matmul(tensor(&stored_rhs, n, k).transpose()),
        strided_lhs.matmul(tensor(&rhs, k, n)),
    ];
    for product in products {
        for (got, (want, size)) in read(product).iter().zip(&expected) {
            assert!(
                (*got as f64 - want).abs() < 1e-5 + 1e-6 * size,
                "{m}x{k}x{n}: {got} vs {want}"
            );
        }
    }
}
