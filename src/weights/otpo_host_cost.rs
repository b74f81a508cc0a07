//! OTPO's token cost computed in host memory, for backends whose tensors live there (with
//! the fused CPU solver; see [`UnbalancedConfig::fast_paths`](crate::UnbalancedConfig)).
//!
//! The backend computes the one product that needs a matrix multiply, `x·y` between the two
//! responses' states; distances, the normalisation and the scaling are then one pass per
//! problem over that buffer, in place, on all cores. The tensor-op version (`token_cost` in
//! `otpo.rs`) is the reference, and both must agree (`tests/suite/fused.rs`).

use burn::tensor::{backend::Backend, DType, Tensor};
use rayon::prelude::*;

use super::CostNormalization;
use crate::sinkhorn::HostBuffer;

/// The two responses of each pair as the cost needs them, on the host: squared norms
/// `[batch * len]` and 0/1 masks `[batch * len]` of each side.
pub(super) struct Sides<'a> {
    pub norms_c: &'a [f64],
    pub norms_r: &'a [f64],
    pub mask_c: &'a [f64],
    pub mask_r: &'a [f64],
}

/// `‖h_c,i − h_r,j‖ + 1e-6` `[batch, len_c, len_r]`, normalised as `normalization` says, from
/// the products `h_c,i · h_r,j` (f32, a tensor of its own, whose buffer is reused).
pub(super) fn token_cost<B: Backend>(
    products: Tensor<B, 3>,
    sides: &Sides<'_>,
    normalization: CostNormalization,
) -> Tensor<B, 3> {
    let device = products.device();
    let [_, len_c, len_r] = products.dims();
    let mut buffer = HostBuffer::owned(products);
    buffer
        .values()
        .par_chunks_mut(len_c * len_r)
        .enumerate()
        .for_each(|(k, pairs)| {
            let rows = k * len_c..(k + 1) * len_c;
            let cols = k * len_r..(k + 1) * len_r;
            pair_cost(
                pairs,
                (&sides.norms_c[rows.clone()], &sides.mask_c[rows]),
                (&sides.norms_r[cols.clone()], &sides.mask_r[cols]),
                normalization,
            );
        });
    buffer.into_tensor(DType::F32, &device)
}

/// One pair's cost, in place over its products `[len_c, len_r]`, as `token_cost` in
/// `otpo.rs` computes it.
fn pair_cost(
    pairs: &mut [f32],
    (norms_c, mask_c): (&[f64], &[f64]),
    (norms_r, mask_r): (&[f64], &[f64]),
    normalization: CostNormalization,
) {
    let width = norms_r.len();
    let norms_r32: Vec<f32> = norms_r.iter().map(|v| *v as f32).collect();
    let mut largest_valid = 0.0f32;
    for (i, row) in pairs.chunks_exact_mut(width).enumerate() {
        let norm_c = norms_c[i] as f32;
        for (p, norm_r) in row.iter_mut().zip(&norms_r32) {
            // ‖x − y‖² = ‖x‖² + ‖y‖² − 2 x·y; the clamp keeps rounding from going below 0.
            *p = (norm_c + norm_r - 2.0 * *p).max(1e-12).sqrt() + 1e-6;
        }
        if mask_c[i] > 0.5 {
            for (p, m) in row.iter().zip(mask_r) {
                if *m > 0.5 {
                    largest_valid = largest_valid.max(*p);
                }
            }
        }
    }
    // The largest norm `‖h‖ + 1e-6` over all positions (padded states were zeroed).
    let largest_norm = |norms: &[f64]| {
        norms
            .iter()
            .fold(0.0f32, |m, n| m.max((*n as f32).sqrt() + 1e-6))
    };
    let scale = match normalization {
        CostNormalization::None => return,
        CostNormalization::ValidPairs => largest_valid.max(1.0),
        CostNormalization::ValidPairsAlways => largest_valid,
        CostNormalization::Released => largest_valid
            .max(largest_norm(norms_c))
            .max(largest_norm(norms_r))
            .max(1.0),
    };
    let inverse = 1.0 / scale;
    pairs.iter_mut().for_each(|p| *p *= inverse);
}
