//! The policy: a decoder with a language-model head (`LlamaForCausalLM` and its siblings).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::linear;
use burn::tensor::{Bool, Int, Tensor};

use super::config::DecoderConfig;
use super::decoder::{Decoder, DecoderCache};
use super::lora::LoraConfig;

/// A decoder with a language-model head. With `tie_word_embeddings` the head IS the embedding
/// matrix (`lm_head` is `None`): one parameter, so training keeps the two tied, as
/// `transformers` does.
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    /// The decoder stack (`model.*` in the checkpoint).
    pub model: Decoder<B>,
    /// The untied output head `hidden → vocab` (`lm_head.weight`); `None` when tied.
    pub lm_head: Option<Linear<B>>,
}

/// What one forward pass of a [`CausalLm`] returns.
#[derive(Debug, Clone)]
pub struct CausalLmOutput<B: Backend> {
    /// Next-token logits `[batch, len, vocab_size]`, in the parameters' dtype (upcast before
    /// a log-softmax when that is not f32).
    pub logits: Tensor<B, 3>,
    /// The last hidden state after the final norm, `[batch, len, hidden_size]` (what OTPO's
    /// token weights are computed from).
    pub hidden: Tensor<B, 3>,
}

impl<B: Backend> CausalLm<B> {
    /// A freshly initialised model (for training from scratch).
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        let lm_head = (!config.tie_word_embeddings).then(|| {
            LinearConfig::new(config.hidden_size, config.vocab_size)
                .with_bias(false)
                .with_initializer(super::normal_init(config))
                .init(device)
        });
        Self {
            model: Decoder::new(config, device),
            lm_head,
        }
    }

    /// The model with fresh LoRA adapters on `config.targets`, everything else frozen
    /// (embeddings and head too, as PEFT leaves them).
    pub fn with_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        Self {
            model: self.model.with_lora(config, device),
            lm_head: self.lm_head.map(Module::no_grad),
        }
    }

    /// The adapters merged into the base weights (PEFT's `merge_and_unload`).
    pub fn merge_lora(self) -> Self {
        Self {
            model: self.model.merge_lora(),
            ..self
        }
    }

    /// Activation checkpointing on (see [`super::checkpointing`]): differentiate losses with
    /// [`CausalLm::backward`].
    pub fn with_gradient_checkpointing(self) -> Self {
        Self {
            model: self.model.with_gradient_checkpointing(),
            ..self
        }
    }

    /// The base model with its adapters switched off, sharing the base tensors: the DPO
    /// reference of a LoRA run without a second copy of the weights.
    pub fn without_lora(self) -> Self {
        Self {
            model: self.model.without_lora(),
            ..self
        }
    }

    /// Logits and last hidden state for `input_ids` `[batch, len]`; `attention_mask` is true
    /// on real tokens (left or right padding).
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> CausalLmOutput<B> {
        self.forward_cached(input_ids, attention_mask, &mut self.model.empty_cache())
    }

    /// Incremental forward for decoding (see [`Decoder::forward_cached`]): logits and hidden
    /// state of the positions after those in `cache`, which it extends.
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
        cache: &mut DecoderCache<B>,
    ) -> CausalLmOutput<B> {
        let hidden = self.model.forward_cached(input_ids, attention_mask, cache);
        let logits = match &self.lm_head {
            Some(head) => head.forward(hidden.clone()),
            None => linear(
                hidden.clone(),
                self.model.embed_tokens.weight.val().transpose(),
                None,
            ),
        };
        CausalLmOutput { logits, hidden }
    }
}

impl<B: AutodiffBackend> CausalLm<B> {
    /// The parameters' gradients of `loss`, recomputing checkpointed layers where the forward
    /// passes that led to it ran with checkpointing.
    pub fn backward(&self, loss: Tensor<B, 1>) -> GradientsParams {
        super::checkpointing::backward(self, &self.model, loss)
    }
}

/// Log-probability of each next token, `[batch, len - 1]`: entry `t` is
/// `log p(input_ids[t + 1] | input_ids[..=t])`. The log-softmax runs in f32 whatever the
/// logits' dtype (bf16/f16 logits overflow and lose the small probabilities otherwise).
pub fn next_token_logps<B: Backend>(
    logits: Tensor<B, 3>,
    input_ids: Tensor<B, 2, Int>,
) -> Tensor<B, 2> {
    let [batch, len, vocab] = logits.dims();
    let logits = logits
        .slice([0..batch, 0..len - 1, 0..vocab])
        .cast(burn::tensor::DType::F32);
    let targets = input_ids.slice([0..batch, 1..len]).unsqueeze_dim::<3>(2);
    burn::tensor::activation::log_softmax(logits, 2)
        .gather(2, targets)
        .reshape([batch, len - 1])
}
