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
use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor, TensorData};

/// Logits computed at a time: `rows × vocab` f32 values (64 MiB).
const CHUNK_VALUES: usize = 1 << 24;

/// The positions per chunk for a vocabulary of `vocab`: `CHUNK_VALUES / vocab` unless
/// `rows` says otherwise.
pub(super) fn chunk_rows(vocab: usize, rows: Option<usize>) -> usize {
    rows.unwrap_or(CHUNK_VALUES / vocab.max(1)).max(1)
}

/// The rows (flattened positions) the head computes log-probabilities for: every row, or only
/// those a loss reads (the response tokens), the others left at zero. Skipping the prompt and
/// the padding skips their share of the head's product and log-softmax, the costliest part
/// of a step after the decoder at a large vocabulary.
#[derive(Debug, Clone)]
pub(super) struct HeadRows<B: Backend> {
    /// The rows computed, ascending; `None`: all of them.
    listed: Option<Tensor<B, 1, Int>>,
    /// Rows computed.
    count: usize,
    /// Rows in all.
    total: usize,
}

impl<B: Backend> HeadRows<B> {
    /// Every one of `total` rows.
    pub fn all(total: usize) -> Self {
        Self {
            listed: None,
            count: total,
            total,
        }
    }

    /// The rows where `needed` (`[batch, n]`, flattened) is nonzero.
    pub fn where_nonzero(needed: Tensor<B, 2>) -> Self {
        let device = needed.device();
        let total = needed.shape().num_elements();
        let listed: Vec<i64> = needed
            .into_data()
            .iter::<f32>()
            .enumerate()
            .filter(|(_, value)| *value != 0.0)
            .map(|(row, _)| row as i64)
            .collect();
        let count = listed.len();
        if count == total {
            return Self::all(total);
        }
        let listed = Tensor::from_data(TensorData::new(listed, [count]), &device);
        Self {
            listed: Some(listed),
            count,
            total,
        }
    }

    /// Rows computed.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The computed rows of `t` (`[total, ..]`).
    pub fn take<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        match &self.listed {
            Some(listed) => t.select(0, listed.clone()),
            None => t,
        }
    }

    /// The computed rows of the targets `[total]`.
    pub fn take_targets(&self, t: Tensor<B, 1, Int>) -> Tensor<B, 1, Int> {
        match &self.listed {
            Some(listed) => t.select(0, listed.clone()),
            None => t,
        }
    }

    /// `[total, ..]` with `t`'s rows (`[count, ..]`) where they were taken from, zero elsewhere.
    pub fn spread<const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        match &self.listed {
            Some(listed) => {
                let mut dims = t.dims();
                dims[0] = self.total;
                let zeros = Tensor::<B, D>::zeros(dims, &t.device()).cast(t.dtype());
                zeros.select_assign(0, listed.clone(), t, IndexingUpdateOp::Add)
            }
            None => t,
        }
    }
}

impl<B: AutodiffBackend> HeadRows<B> {
    /// The same rows on the inner backend.
    pub fn inner(&self) -> HeadRows<B::InnerBackend> {
        HeadRows {
            listed: self.listed.clone().map(Tensor::inner),
            count: self.count,
            total: self.total,
        }
    }
}

/// `log softmax(hidden · weight)[target]` per row: `hidden` `[rows, d]`, `weight` `[d, vocab]`
/// (the head in burn's `Linear` layout), `targets` `[rows]`; returns `[rows]` in f32, computed
/// over chunks of `step` rows.
pub fn chunked_logps<B: Backend>(
    hidden: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    step: usize,
) -> Tensor<B, 1> {
    let [rows, _] = hidden.dims();
    let parts: Vec<Tensor<B, 1>> = (0..rows)
        .step_by(step)
        .map(|start| {
            let len = step.min(rows - start);
            chunk_logps(
                hidden.clone().narrow(0, start, len),
                weight.clone(),
                targets.clone().narrow(0, start, len),
            )
        })
        .collect();
    Tensor::cat(parts, 0)
}

/// `log softmax(hidden · weight)[target]` of one chunk of rows, the log-softmax in f32.
fn chunk_logps<B: Backend>(
    hidden: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let rows = targets.dims()[0];
    log_softmax(hidden.matmul(weight).cast(DType::F32), 1)
        .gather(1, targets.reshape([rows, 1]))
        .reshape([rows])
}

/// The gradient of the hidden states `hidden` `[rows, d]` (the rows that predict `targets`
/// `[rows]`) when their log-probabilities received `upstream` `[rows]`; the gradient of the
/// head weight (`weight()`, `[d, vocab]`) goes to `accumulator`. One chunk of `step` rows is
/// recomputed with autodiff at a time.
pub(super) fn backward<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    weight: &dyn Fn() -> Tensor<B, 2>,
    hidden: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    step: usize,
    upstream: Tensor<B::InnerBackend, 1>,
    accumulator: &mut GradientsAccumulator<M>,
) -> Tensor<B::InnerBackend, 2> {
    let [rows, _] = hidden.dims();
    let hidden = hidden.detach();
    // A fresh weight per chunk: a backward consumes the graph it runs through, so a tied
    // head's transpose of the embeddings must be recorded anew each time.
    let mut parts = Vec::new();
    for start in (0..rows).step_by(step) {
        let len = step.min(rows - start);
        let chunk = hidden.clone().narrow(0, start, len).detach().require_grad();
        let logps = chunk_logps(
            chunk.clone(),
            weight(),
            targets.clone().narrow(0, start, len),
        );
        let seed = Tensor::from_inner(upstream.clone().narrow(0, start, len));
        let mut grads = (logps * seed).sum().backward();
        parts.push(
            chunk
                .grad_remove(&mut grads)
                .unwrap_or_else(|| chunk.clone().inner().zeros_like()),
        );
        accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    Tensor::cat(parts, 0)
}
