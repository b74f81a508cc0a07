//! Supervised fine-tuning's loss, and the NLL the DPO family adds (RPO).

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use crate::data::PairBatch;
use crate::model::CausalLm;

/// Supervised loss: mean negative log-likelihood of the chosen responses' tokens.
pub fn sft_loss<B: AutodiffBackend>(policy: &CausalLm<B>, batch: PairBatch<B>) -> Tensor<B, 1> {
    let pairs = batch.pairs;
    let [_, len] = batch.input_ids.dims();
    let ids = batch.input_ids.slice([0..pairs, 0..len]);
    let mask = batch.attention_mask.slice([0..pairs, 0..len]);
    let response = batch.response_mask.slice([0..pairs, 0..len - 1]);
    // Differentiated through `CausalLm::backward` (the head runs in chunks).
    let logps = policy
        .forward_logps_where(ids, mask, response.clone())
        .logps;
    response_nll(logps, response)
}

/// The chosen responses' negative log-likelihood per response token (TRL's `nll_loss`): rows
/// `0..b` of `logps` `[2b, len - 1]` over their response `mask`.
pub fn chosen_nll<B: burn::tensor::backend::Backend>(
    logps: Tensor<B, 2>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let b = mask.dims()[0] / 2;
    response_nll(logps.narrow(0, 0, b), mask.narrow(0, 0, b))
}

/// Mean negative log-likelihood over the tokens where `mask` is 1 (the SFT loss).
pub fn response_nll<B: burn::tensor::backend::Backend>(
    logps: Tensor<B, 2>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    (logps * mask.clone()).sum().neg() / mask.sum().clamp_min(1.0)
}
