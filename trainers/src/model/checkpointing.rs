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
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

use super::decoder::Decoder;
use super::tape::{reseed_layer, LayerTape};

/// `loss.backward()` for a model whose decoder may have run checkpointed: the gradients of
/// the part of the graph autodiff recorded (head, final norm), then each checkpointed
/// forward's layers recomputed from the top down, then the embeddings. Without checkpointing
/// this is `GradientsParams::from_grads(loss.backward(), model)`.
pub fn backward<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    decoder: &Decoder<B>,
    loss: Tensor<B, 1>,
) -> GradientsParams {
    let mut grads = loss.backward();
    let tapes = match decoder.checkpointing() {
        Some(checkpointing) => checkpointing.take::<B>(),
        None => Vec::new(),
    };
    let upstream: Vec<_> = tapes
        .iter()
        .map(|tape| tape.leaf.grad_remove(&mut grads))
        .collect();
    let mut accumulator = GradientsAccumulator::<M>::new();
    accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    for (tape, upstream) in tapes.into_iter().zip(upstream) {
        if let Some(upstream) = upstream {
            recompute(model, decoder, tape, upstream, &mut accumulator);
        }
    }
    accumulator.grads()
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
        let grads = (embedded * Tensor::from_inner(upstream)).sum().backward();
        accumulator.accumulate(model, GradientsParams::from_grads(grads, model));
    }
}
