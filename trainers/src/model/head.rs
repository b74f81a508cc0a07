//! Per-token log-probabilities from the last hidden state without the full-vocabulary logits:
//! the head's matrix product, the log-softmax (in f32) and the gather of the target token run
//! over chunks of positions, so that no `[batch, len, vocab]` tensor exists at once (the
//! memory TRL users most often run out of; Liger's fused linear cross-entropy is the known
//! reference for the idea).
//!
//! In training the chunks run unrecorded and the loss starts from a leaf holding their result;
//! [`backward`](super::checkpointing::backward) then recomputes one chunk at a time with
//! autodiff, from the hidden state and the head weight, to turn the leaf's gradient into
//! theirs.

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Int, Tensor};

/// Logits computed at a time: `rows × vocab` f32 values (64 MiB).
const CHUNK_VALUES: usize = 1 << 24;

/// The positions per chunk for a vocabulary of `vocab`: `CHUNK_VALUES / vocab` unless
/// `rows` says otherwise.
pub(super) fn chunk_rows(vocab: usize, rows: Option<usize>) -> usize {
    rows.unwrap_or(CHUNK_VALUES / vocab.max(1)).max(1)
}

/// `log softmax(hidden · weight)[target]` per position: `hidden` `[batch, n, d]`, `weight`
/// `[d, vocab]` (the head in burn's `Linear` layout), `targets` `[batch, n]`; returns
/// `[batch, n]` in f32, computed over chunks of `step` positions.
pub fn chunked_logps<B: Backend>(
    hidden: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    targets: Tensor<B, 2, Int>,
    step: usize,
) -> Tensor<B, 2> {
    let [batch, n, d] = hidden.dims();
    let rows = batch * n;
    let hidden = hidden.reshape([rows, d]);
    let targets = targets.reshape([rows, 1]);
    let parts: Vec<Tensor<B, 1>> = (0..rows)
        .step_by(step)
        .map(|start| {
            let end = (start + step).min(rows);
            let logits = hidden
                .clone()
                .slice([start..end, 0..d])
                .matmul(weight.clone());
            log_softmax(logits.cast(DType::F32), 1)
                .gather(1, targets.clone().slice([start..end, 0..1]))
                .reshape([end - start])
        })
        .collect();
    Tensor::cat(parts, 0).reshape([batch, n])
}

/// The gradient of the hidden state `hidden` `[batch, n, d]` (the positions that predict
/// `targets` `[batch, n]`) when their log-probabilities received `upstream` `[batch, n]`; the
/// gradient of the head weight (`weight()`, `[d, vocab]`) goes to `accumulator`. One chunk of
/// `step` positions is recomputed with autodiff at a time.
pub(super) fn backward<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    weight: &dyn Fn() -> Tensor<B, 2>,
    hidden: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    step: usize,
    upstream: Tensor<B::InnerBackend, 2>,
    accumulator: &mut GradientsAccumulator<M>,
) -> Tensor<B::InnerBackend, 3> {
    let [batch, n, d] = hidden.dims();
    let rows = batch * n;
    let hidden = hidden.detach().reshape([rows, d]);
    let targets = targets.reshape([rows, 1]);
    let upstream = upstream.reshape([rows]);
    // A fresh weight per chunk: a backward consumes the graph it runs through, so a tied
    // head's transpose of the embeddings must be recorded anew each time.
    let mut parts = Vec::new();
    for start in (0..rows).step_by(step) {
        let end = (start + step).min(rows);
        let chunk = hidden
            .clone()
            .slice([start..end, 0..d])
            .detach()
            .require_grad();
        let logits = chunk.clone().matmul(weight());
        let logps = log_softmax(logits.cast(DType::F32), 1)
            .gather(1, targets.clone().slice([start..end, 0..1]))
            .reshape([end - start]);
        let seed = Tensor::from_inner(upstream.clone().narrow(0, start, end - start));
        let mut grads = (logps * seed).sum().backward();
        parts.push(
            chunk
                .grad_remove(&mut grads)
                .unwrap_or_else(|| chunk.clone().inner().zeros_like()),
        );
        accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    Tensor::cat(parts, 0).reshape([batch, n, d])
}
