//! The Llama-family decoder stack shared by the policy and the reward model: token
//! embeddings, pre-norm layers of attention and SwiGLU, and a final RMSNorm.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Bool, Int, Tensor};

use super::attention::Attention;
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
    ) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), rotary, masked);
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
        let [batch, len] = input_ids.dims();
        let device = input_ids.device();
        let x = self.embed_tokens.forward(input_ids);
        let rotary = RotaryTables::new(&self.inverse_frequencies, len, &x);
        // A query may not see a later position, nor a padded key.
        let future = Tensor::<B, 2, Bool>::tril_mask([len, len], 0, &device)
            .reshape([1, 1, len, len])
            .expand([batch, 1, len, len]);
        let padded_key = attention_mask
            .bool_not()
            .reshape([batch, 1, 1, len])
            .expand([batch, 1, len, len]);
        let masked = future.bool_or(padded_key);
        let x = self
            .layers
            .iter()
            .fold(x, |x, layer| layer.forward(x, &rotary, masked.clone()));
        self.norm.forward(x)
    }
}
