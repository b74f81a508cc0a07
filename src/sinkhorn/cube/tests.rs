//! The row kernel's plane combination, forced on the test device. CubeCL leaves plane
//! operations off on CPU devices (Mesa's lavapipe, which CI runs), so the suite's kernel
//! tests take the shared-memory combination there; these run the plane one against sums
//! taken in f64 on the host. The device's plane width must divide a cube row, so that
//! a width of 4, 8 or 16 also exercises the shared-memory step across the planes of a row.

use burn::backend::Vulkan;
use burn::tensor::{DType, Tensor, TensorData};
use burn_cubecl::cubecl::{wgpu::WgpuRuntime, Runtime};

use super::{kernels::LANES, reduce_with};
use crate::{Axis, Reduction};

/// SplitMix64 values in `[-spread, spread)`.
fn values(count: usize, seed: u64, spread: f64) -> Vec<f64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let unit = (z ^ (z >> 31)) as f64 / u64::MAX as f64;
            spread * (2.0 * unit - 1.0)
        })
        .collect()
}

fn host(tensor: Tensor<Vulkan, 2>) -> Vec<f64> {
    tensor.into_data().convert::<f64>().into_vec().unwrap()
}

#[test]
fn plane_combination_matches_f64_sums() {
    let device = Default::default();
    let client = WgpuRuntime::client(&device);
    let hardware = &client.properties().hardware;
    let width = hardware.plane_size_max;
    assert!(
        hardware.plane_size_min == width && width > 0 && LANES.is_multiple_of(width),
        "the test device's plane width ({}..{}) must be fixed and divide {LANES}",
        hardware.plane_size_min,
        width
    );
    for (seed, [batch, n, m], spread) in [
        (1, [1, 1, 1], 1.0),
        (2, [2, 9, 33], 1.0),
        (3, [3, 17, 70], 300.0),
        (4, [1, 5, 1000], 300.0),
    ] {
        let matrix = values(batch * n * m, seed, spread);
        let mut weights = values(batch * m, seed + 100, 3.0);
        weights[m - 1] = if m > 1 { -1e30 } else { 0.0 };
        let f32_data = |values, shape: &[usize]| {
            TensorData::new(values, shape.to_vec()).convert_dtype(DType::F32)
        };
        let matrix = Tensor::<Vulkan, 3>::from_data(f32_data(matrix, &[batch, n, m]), &device);
        let weights = Tensor::<Vulkan, 2>::from_data(f32_data(weights, &[batch, m]), &device);
        let (matrix_host, weights_host) = (
            host(matrix.clone().reshape([batch, n * m])),
            host(weights.clone()),
        );
        let lse = reduce_with(&matrix, &weights, Axis::Rows, Reduction::LogSumExp, width);
        let clipped = weights.clone().clamp_min(-1e3);
        let sum = reduce_with(&matrix, &clipped, Axis::Rows, Reduction::WeightedSum, width);
        let (lse, sum) = (host(lse.unwrap()), host(sum.unwrap()));
        for p in 0..batch {
            for i in 0..n {
                let row = |j: usize| (matrix_host[p * n * m + i * m + j], weights_host[p * m + j]);
                let top = (0..m).map(|j| row(j).0 + row(j).1).fold(f64::MIN, f64::max);
                let total: f64 = (0..m).map(|j| (row(j).0 + row(j).1 - top).exp()).sum();
                let lse_ref = top + total.ln();
                let sum_ref: f64 = (0..m).map(|j| row(j).0 * row(j).1.max(-1e3)).sum();
                let scale: f64 = (0..m).map(|j| (row(j).0 * row(j).1.max(-1e3)).abs()).sum();
                let at = p * n + i;
                assert!(
                    (lse[at] - lse_ref).abs() <= 1e-5 * lse_ref.abs().max(1.0),
                    "log-sum-exp of row {i}, problem {p}, width {width}: {} vs {lse_ref}",
                    lse[at]
                );
                assert!(
                    (sum[at] - sum_ref).abs() <= 1e-5 * scale.max(1.0),
                    "weighted sum of row {i}, problem {p}, width {width}: {} vs {sum_ref}",
                    sum[at]
                );
            }
        }
    }
}
