//! Activation checkpointing (`transformers`' `gradient_checkpointing_enable`), per decoder
//! layer: the training forward runs the layers without recording them for autodiff and keeps
//! only each layer's input; the backward recomputes one layer at a time, with autodiff, from
//! its input and the gradient coming down from the layer above. Peak memory holds one layer's
//! activations instead of all of them, for one more forward pass of the layers.
//!
//! burn 0.21's `BalancedCheckpointing` recomputes cheap element-wise ops but keeps every matrix
//! product's output (the attention scores among them), which is most of a decoder's activation
//! memory; hence this module, written with burn's public autodiff API only (each layer's
//! recomputation is a small backward of `⟨layer(x), g⟩`).

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;

use super::decoder::Decoder;
use super::tape::{reseed_layer, HeadTape, LayerTape, Tapes};

/// `loss.backward()` for a model whose forward passes recorded tapes: the gradients of the
/// part of the graph autodiff recorded; then each chunked head's log-probabilities (`head`:
/// the model's head tapes and weight) recomputed chunk by chunk and their gradient carried into
/// the decoder's graph; then each checkpointed forward's layers recomputed from the top down,
/// and the embeddings. Without tapes this is `GradientsParams::from_grads(loss.backward(),
/// model)`.
pub fn backward<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    decoder: &Decoder<B>,
    head: Option<(&Tapes, &dyn Fn() -> Tensor<B, 2>)>,
    loss: Tensor<B, 1>,
) -> GradientsParams {
    let mut grads = loss.backward();
    let layer_tapes = match decoder.checkpointing() {
        Some(tapes) => tapes.take::<LayerTape<B>>(),
        None => Vec::new(),
    };
    let mut upstream: Vec<_> = layer_tapes
        .iter()
        .map(|tape| tape.leaf.grad_remove(&mut grads))
        .collect();
    let mut accumulator = GradientsAccumulator::<M>::new();
    if let Some((tapes, weight)) = head {
        for tape in tapes.take::<HeadTape<B>>() {
            let hidden = head_gradient(model, weight, &tape, &mut grads, &mut accumulator);
            let Some(hidden) = hidden else { continue };
            // Into the decoder's graph: its last hidden state takes the gradient found.
            let mut below = (tape.hidden * Tensor::from_inner(hidden)).sum().backward();
            for (tape, slot) in layer_tapes.iter().zip(upstream.iter_mut()) {
                *slot = add(slot.take(), tape.leaf.grad_remove(&mut below));
            }
            accumulator.accumulate(model, GradientsParams::from_grads(below, model));
        }
    }
    accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    for (tape, upstream) in layer_tapes.into_iter().zip(upstream) {
        if let Some(upstream) = upstream {
            recompute(model, decoder, tape, upstream, &mut accumulator);
        }
    }
    accumulator.grads()
}

/// The gradient of a head tape's hidden state `[batch, len, d]`: what the loss sent to it
/// directly, plus what its log-probabilities' gradient becomes through the head (recomputed
/// in chunks; the head weight's share goes to `accumulator`). `None` when the loss used
/// neither.
fn head_gradient<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    weight: &dyn Fn() -> Tensor<B, 2>,
    tape: &HeadTape<B>,
    grads: &mut B::Gradients,
    accumulator: &mut GradientsAccumulator<M>,
) -> Option<Tensor<B::InnerBackend, 3>> {
    let direct = tape.hidden_leaf.grad_remove(grads);
    let through_head = tape.logps_leaf.grad_remove(grads).map(|upstream| {
        let [batch, len, width] = tape.hidden.dims();
        let total = batch * (len - 1);
        let shifted = tape
            .hidden
            .clone()
            .detach()
            .slice([0..batch, 0..len - 1, 0..width]);
        let inner_rows = tape.rows.inner();
        let grad = super::head::backward(
            model,
            weight,
            tape.rows.take(shifted.reshape([total, width])),
            tape.targets.clone(),
            tape.chunk_rows,
            inner_rows.take(upstream.reshape([total])),
            accumulator,
        );
        let grad = inner_rows.spread(grad).reshape([batch, len - 1, width]);
        // The last position predicts nothing: its share is zero.
        let last = Tensor::zeros([batch, 1, width], &grad.device());
        Tensor::cat(vec![grad, last], 1)
    });
    add(direct, through_head)
}

fn add<B: Backend, const D: usize>(
    a: Option<Tensor<B, D>>,
    b: Option<Tensor<B, D>>,
) -> Option<Tensor<B, D>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    }
}

/// The layers of one checkpointed forward, recomputed from the last down with the gradient
/// `upstream` of their output; their parameters' gradients go to `accumulator`.
fn recompute<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    decoder: &Decoder<B>,
    tape: LayerTape<B>,
    upstream: Tensor<B::InnerBackend, 3>,
    accumulator: &mut GradientsAccumulator<M>,
) {
    let device = tape.leaf.device();
    let mut upstream = upstream;
    for (index, layer) in decoder.layers.iter().enumerate().rev() {
        reseed_layer::<B>(&device, tape.seed, index);
        let x = tape.inputs[index].clone().detach().require_grad();
        let out = layer.forward(x.clone(), &tape.rotary, tape.masked.clone(), &mut None);
        let mut grads = (out * Tensor::from_inner(upstream.clone()))
            .sum()
            .backward();
        match x.grad_remove(&mut grads) {
            Some(down) => upstream = down,
            None => return,
        }
        accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    }
    // Frozen embeddings (LoRA) take no gradient.
    if decoder.embed_tokens.weight.is_require_grad() {
        let embedded = decoder.embed_tokens.forward(tape.input_ids);
        let embedded = embedded.cast(decoder.compute_dtype());
        let grads = (embedded * Tensor::from_inner(upstream)).sum().backward();
        accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    }
}
