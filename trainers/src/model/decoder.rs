//! The Llama-family decoder stack shared by the policy and the reward model: token
//! embeddings, pre-norm layers of attention and SwiGLU, and a final RMSNorm.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Bool, Int, Tensor};

use super::attention::{Attention, KeyValues};
use super::config::DecoderConfig;
use super::rotary::RotaryTables;

/// The SwiGLU feed-forward block: `down(silu(gate(x)) ⊙ up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `hidden → intermediate`, through SiLU.
    pub gate_proj: Linear<B>,
    /// `hidden → intermediate`.
    pub up_proj: Linear<B>,
    /// `intermediate → hidden`.
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        let linear = |d_in, d_out| {
            LinearConfig::new(d_in, d_out)
                .with_bias(config.mlp_bias)
                .with_initializer(super::normal_init(config))
                .init(device)
        };
        let (hidden, inner) = (config.hidden_size, config.intermediate_size);
        Self {
            gate_proj: linear(hidden, inner),
            up_proj: linear(hidden, inner),
            down_proj: linear(inner, hidden),
        }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj
            .forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

/// One pre-norm decoder layer: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    /// Self-attention.
    pub self_attn: Attention<B>,
    /// Feed-forward block.
    pub mlp: Mlp<B>,
    /// Norm before attention.
    pub input_layernorm: RmsNorm<B>,
    /// Norm before the feed-forward block.
    pub post_attention_layernorm: RmsNorm<B>,
}

impl<B: Backend> DecoderLayer<B> {
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rotary: &RotaryTables<B>,
        masked: Tensor<B, 4, Bool>,
        cache: &mut Option<KeyValues<B>>,
    ) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rotary, masked, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// The decoder without an output head (`LlamaModel`, `Qwen2Model`, `MistralModel`): token ids
/// in, the last hidden state after the final norm out.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// Token embeddings `[vocab_size, hidden_size]`.
    pub embed_tokens: Embedding<B>,
    /// The decoder layers.
    pub layers: Vec<DecoderLayer<B>>,
    /// The final norm.
    pub norm: RmsNorm<B>,
    /// Rotary inverse frequencies, derived from the config (not a parameter).
    #[module(skip)]
    inverse_frequencies: Vec<f32>,
}

impl<B: Backend> Decoder<B> {
    /// A freshly initialised decoder (normal weights of std `initializer_range`, unit norms).
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        let norm = || {
            RmsNormConfig::new(config.hidden_size)
                .with_epsilon(config.rms_norm_eps)
                .init(device)
        };
        Self {
            embed_tokens: EmbeddingConfig::new(config.vocab_size, config.hidden_size)
                .with_initializer(super::normal_init(config))
                .init(device),
            layers: (0..config.num_layers)
                .map(|_| DecoderLayer {
                    self_attn: Attention::new(config, device),
                    mlp: Mlp::new(config, device),
                    input_layernorm: norm(),
                    post_attention_layernorm: norm(),
                })
                .collect(),
            norm: norm(),
            inverse_frequencies: config.inverse_frequencies(),
        }
    }

    /// `input_ids`, `attention_mask`: `[batch, len]` (mask true on real tokens; padding may
    /// sit on either side). Returns the last hidden state `[batch, len, hidden]` after the final
    /// norm. Hidden states at padded positions are finite but meaningless.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> Tensor<B, 3> {
        self.forward_cached(input_ids, attention_mask, &mut self.empty_cache())
    }

    /// An empty key/value cache for [`Decoder::forward_cached`].
    pub fn empty_cache(&self) -> DecoderCache<B> {
        DecoderCache {
            layers: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Incremental forward: `input_ids` `[batch, new]` are the positions after the `cache.len()`
    /// ones in `cache`, and `attention_mask` `[batch, cache.len() + new]` covers them all (true
    /// on real tokens). Returns the new positions' last hidden state and extends the cache; with
    /// an empty cache this is [`Decoder::forward`].
    pub fn forward_cached(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
        cache: &mut DecoderCache<B>,
    ) -> Tensor<B, 3> {
        let [batch, new] = input_ids.dims();
        let (past, total) = (cache.len, cache.len + new);
        let device = input_ids.device();
        let x = self.embed_tokens.forward(input_ids);
        let rotary = RotaryTables::new(&self.inverse_frequencies, past..total, &x);
        // Query `i` (position `past + i`) may not see a later position, nor a padded key.
        let future = Tensor::<B, 2, Bool>::tril_mask([new, total], past as i64, &device)
            .reshape([1, 1, new, total])
            .expand([batch, 1, new, total]);
        let padded_key = attention_mask
            .bool_not()
            .reshape([batch, 1, 1, total])
            .expand([batch, 1, new, total]);
        let masked = future.bool_or(padded_key);
        let x = self
            .layers
            .iter()
            .zip(cache.layers.iter_mut())
            .fold(x, |x, (layer, layer_cache)| {
                layer.forward(x, &rotary, masked.clone(), layer_cache)
            });
        cache.len = total;
        self.norm.forward(x)
    }
}

/// Every layer's keys and values for the positions a [`Decoder`] has seen, so that decoding
/// one more token costs one position's work instead of the whole sequence's.
#[derive(Debug, Clone)]
pub struct DecoderCache<B: Backend> {
    layers: Vec<Option<KeyValues<B>>>,
    len: usize,
}

impl<B: Backend> DecoderCache<B> {
    /// How many positions the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache holds no position yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}
