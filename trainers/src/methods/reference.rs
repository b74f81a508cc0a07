//! The reference's log-probabilities computed once over the training data (TRL's
//! `precompute_ref_log_probs`), and laid out again as any batch needs them.

use burn::tensor::Tensor;

use crate::data::{collate_pairs, TokenizedPair};
use crate::model::CausalLm;

/// Reference log-probabilities of one pair, `[len - 1]` per response row, computed once.
#[derive(Debug, Clone)]
pub struct ReferenceLogps {
    /// The chosen response's row.
    pub chosen: Vec<f32>,
    /// The rejected response's row.
    pub rejected: Vec<f32>,
}

/// Reference log-probabilities of every pair (in its own collation), for `--precompute-ref`.
pub fn reference_logps<B: burn::tensor::backend::Backend>(
    reference: &CausalLm<B>,
    pairs: &[TokenizedPair],
    batch_size: usize,
    pad: u32,
    device: &B::Device,
) -> Vec<ReferenceLogps> {
    let mut all = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size) {
        let batch = collate_pairs::<B>(chunk, pad, device);
        let logps = reference
            .forward_logps_where(batch.input_ids, batch.attention_mask, batch.response_mask)
            .logps;
        let [rows, width] = logps.dims();
        let values = logps
            .into_data()
            .to_vec::<f32>()
            .expect("f32 log-probabilities");
        let row = |r: usize| values[r * width..(r + 1) * width].to_vec();
        let half = rows / 2;
        for i in 0..half {
            all.push(ReferenceLogps {
                chosen: row(i),
                rejected: row(half + i),
            });
        }
    }
    all
}

/// Precomputed rows laid out as the batch's `[2·pairs, len - 1]` (each row's own positions are
/// the same in any collation: prompt then response, right padding).
pub fn precomputed_tensor<B: burn::tensor::backend::Backend>(
    rows: &[ReferenceLogps],
    width: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let fit = |row: &Vec<f32>| {
        let mut row = row.clone();
        row.resize(width, 0.0);
        row.truncate(width);
        row
    };
    let flat: Vec<f32> = rows
        .iter()
        .map(|r| fit(&r.chosen))
        .chain(rows.iter().map(|r| fit(&r.rejected)))
        .flatten()
        .collect();
    Tensor::from_data(
        burn::tensor::TensorData::new(flat, [2 * rows.len(), width]),
        device,
    )
}
