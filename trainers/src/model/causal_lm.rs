//! The policy: a decoder with a language-model head (`LlamaForCausalLM` and its siblings).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor};

use super::config::DecoderConfig;
use super::decoder::{Decoder, DecoderCache};
use super::head::{chunk_rows, chunked_logps, HeadRows};
use super::lora::LoraConfig;
use super::projection::linear;
use super::tape::{HeadTape, Tapes};

/// A decoder with a language-model head. With `tie_word_embeddings` the head IS the embedding
/// matrix (`lm_head` is `None`): one parameter, so training keeps the two tied, as
/// `transformers` does.
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    /// The decoder stack (`model.*` in the checkpoint).
    pub model: Decoder<B>,
    /// The untied output head `hidden → vocab` (`lm_head.weight`); `None` when tied.
    pub lm_head: Option<Linear<B>>,
    /// What training forwards of [`CausalLm::forward_logps`] keep for [`CausalLm::backward`].
    #[module(skip)]
    head_tapes: Tapes,
    /// Positions per chunk of [`CausalLm::forward_logps`] (`None`: 64 MiB of f32 logits).
    #[module(skip)]
    head_chunk_rows: Option<usize>,
}

/// What [`CausalLm::forward_logps`] returns.
#[derive(Debug, Clone)]
pub struct TokenLogps<B: Backend> {
    /// `log p(input_ids[t + 1] | input_ids[..=t])`, `[batch, len - 1]`, in f32.
    pub logps: Tensor<B, 2>,
    /// The last hidden state after the final norm, `[batch, len, hidden_size]`.
    pub hidden: Tensor<B, 3>,
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
            head_tapes: Tapes::default(),
            head_chunk_rows: None,
        }
    }

    /// The model with fresh LoRA adapters on `config.targets`, everything else frozen
    /// (embeddings and head too, as PEFT leaves them).
    pub fn with_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        Self {
            model: self.model.with_lora(config, device),
            lm_head: self.lm_head.map(Module::no_grad),
            ..self
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
        let logits = linear(hidden.clone(), self.head_weight(), None);
        CausalLmOutput { logits, hidden }
    }

    /// [`CausalLm::forward_logps`] with `rows` positions per chunk of the head (fewer: less
    /// memory, smaller matrix products).
    pub fn with_head_chunk_rows(self, rows: usize) -> Self {
        Self {
            head_chunk_rows: Some(rows.max(1)),
            ..self
        }
    }

    /// The output head's weight `[hidden, vocab]`: `lm_head`'s, or the embedding matrix's
    /// transpose when tied.
    pub fn head_weight(&self) -> Tensor<B, 2> {
        let weight = match &self.lm_head {
            Some(head) => head.weight.val(),
            None => self.model.embed_tokens.weight.val().transpose(),
        };
        // A head held in a lower precision (a bf16 base) multiplies in the activations' dtype.
        weight.cast(self.model.compute_dtype())
    }

    /// The model with its frozen matrices held in `dtype` (see
    /// [`cast_frozen_matrices`](super::lora::cast_frozen_matrices)).
    pub fn with_frozen_dtype(self, dtype: burn::tensor::DType) -> Self {
        super::lora::cast_frozen_matrices(self, dtype)
    }

    /// The per-token log-probabilities of `input_ids` (what [`next_token_logps`] computes from
    /// the logits) and the last hidden state, without the full-vocabulary logits: the head
    /// runs over chunks of positions ([`super::head`]) when there is more than one. On an
    /// autodiff backend the result is then a leaf: differentiate a loss of it with
    /// [`CausalLm::backward`], which recomputes the chunks (a plain `loss.backward()` would not
    /// reach the model's parameters).
    pub fn forward_logps(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> TokenLogps<B> {
        let [batch, len] = input_ids.dims();
        self.logps_at(input_ids, attention_mask, HeadRows::all(batch * (len - 1)))
    }

    /// [`CausalLm::forward_logps`] where `needed` (`[batch, len - 1]`, aligned with the
    /// log-probabilities: a response mask) is nonzero, and zero elsewhere: the head's product
    /// and log-softmax skip the prompt and the padding. Losses that read only the masked
    /// positions come out the same.
    pub fn forward_logps_where(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
        needed: Tensor<B, 2>,
    ) -> TokenLogps<B> {
        self.logps_at(input_ids, attention_mask, HeadRows::where_nonzero(needed))
    }

    fn logps_at(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
        rows: HeadRows<B>,
    ) -> TokenLogps<B> {
        let [batch, len] = input_ids.dims();
        let device = input_ids.device();
        let hidden = self.model.forward(input_ids.clone(), attention_mask);
        let width = hidden.dims()[2];
        // Row `b · (len - 1) + t`: the hidden state at `t` predicts token `t + 1`.
        let flat = |h: Tensor<B, 3>| {
            h.slice([0..batch, 0..len - 1, 0..width])
                .reshape([batch * (len - 1), width])
        };
        let targets = rows.take_targets(
            input_ids
                .slice([0..batch, 1..len])
                .reshape([batch * (len - 1)]),
        );
        let unflat = |logps: Tensor<B, 1>| rows.spread(logps).reshape([batch, len - 1]);
        if rows.count() == 0 {
            let logps = Tensor::zeros([batch, len - 1], &device);
            return TokenLogps { logps, hidden };
        }
        let step = chunk_rows(
            self.model.embed_tokens.weight.dims()[0],
            self.head_chunk_rows,
        );
        if rows.count() <= step || !B::ad_enabled(&device) {
            // One chunk holds every row (the plain graph, nothing to recompute), or no graph.
            let taken = rows.take(flat(hidden.clone()));
            let logps = unflat(chunked_logps(taken, self.head_weight(), targets, step));
            return TokenLogps { logps, hidden };
        }
        let values = chunked_logps(
            rows.take(flat(hidden.clone().detach())),
            self.head_weight().detach(),
            targets.clone(),
            step,
        );
        let tape = HeadTape {
            hidden_leaf: hidden.clone().detach().require_grad(),
            logps_leaf: unflat(values).detach().require_grad(),
            hidden,
            targets,
            rows,
            chunk_rows: step,
        };
        let out = TokenLogps {
            logps: tape.logps_leaf.clone(),
            hidden: tape.hidden_leaf.clone(),
        };
        self.head_tapes.push(tape);
        out
    }
}

impl<B: AutodiffBackend> CausalLm<B> {
    /// The parameters' gradients of `loss`, recomputing checkpointed layers where the forward
    /// passes that led to it ran with checkpointing.
    pub fn backward(&self, loss: Tensor<B, 1>) -> GradientsParams {
        let weight = || self.head_weight();
        let head: Option<(&Tapes, &dyn Fn() -> Tensor<B, 2>)> = Some((&self.head_tapes, &weight));
        super::checkpointing::backward(self, &self.model, head, loss)
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
