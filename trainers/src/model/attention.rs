//! Grouped-query self-attention with rotary positions, as in Hugging Face's `LlamaAttention`.

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{backend::Backend, Bool, Tensor};

use super::config::DecoderConfig;
use super::lora::LoraLinear;
use super::rotary::RotaryTables;

/// The keys (rotated) and values of the positions one layer has seen, `[batch, kv_heads, len,
/// head_dim]`: what incremental decoding reuses instead of recomputing.
#[derive(Debug, Clone)]
pub struct KeyValues<B: Backend> {
    keys: Tensor<B, 4>,
    values: Tensor<B, 4>,
}

/// Self-attention of one decoder layer. Field names follow `transformers`
/// (`self_attn.q_proj`, ...) so that checkpoints load without renaming.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Query projection `hidden → num_heads · head_dim`.
    pub q_proj: LoraLinear<B>,
    /// Key projection `hidden → num_kv_heads · head_dim`.
    pub k_proj: LoraLinear<B>,
    /// Value projection `hidden → num_kv_heads · head_dim`.
    pub v_proj: LoraLinear<B>,
    /// Output projection `num_heads · head_dim → hidden`.
    pub o_proj: LoraLinear<B>,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl<B: Backend> Attention<B> {
    /// A freshly initialised attention block for `config`.
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        let linear = |d_in, d_out, bias| -> LoraLinear<B> {
            LinearConfig::new(d_in, d_out)
                .with_bias(bias)
                .with_initializer(super::normal_init(config))
                .init(device)
                .into()
        };
        let (hidden, q_width, kv_width) = (
            config.hidden_size,
            config.num_heads * config.head_dim,
            config.num_kv_heads * config.head_dim,
        );
        Self {
            q_proj: linear(hidden, q_width, config.qkv_bias),
            k_proj: linear(hidden, kv_width, config.qkv_bias),
            v_proj: linear(hidden, kv_width, config.qkv_bias),
            o_proj: linear(q_width, hidden, config.o_bias),
            num_heads: config.num_heads,
            num_kv_heads: config.num_kv_heads,
            head_dim: config.head_dim,
        }
    }

    /// `x`: `[batch, len, hidden]`, the positions after those in `cache` (all of them when the
    /// cache is empty); `masked`: `[batch, 1, len, cached + len]`, true where a query may not
    /// see a key (the future, or padding). The new keys and values are appended to `cache`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rotary: &RotaryTables<B>,
        masked: Tensor<B, 4, Bool>,
        cache: &mut Option<KeyValues<B>>,
    ) -> Tensor<B, 3> {
        let [batch, len, _] = x.dims();
        // `[batch, len, hidden]` split into heads; rotated there, then heads ahead of positions.
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, len, n, self.head_dim]);
        let heads_first = |t: Tensor<B, 4>| t.swap_dims(1, 2);
        let q = heads_first(rotary.apply(split(self.q_proj.forward(x.clone()), self.num_heads)));
        let k = split(self.k_proj.forward(x.clone()), self.num_kv_heads);
        let k = heads_first(rotary.apply(k));
        let v = heads_first(split(self.v_proj.forward(x), self.num_kv_heads));
        let (k, v) = match cache.take() {
            Some(past) => (
                Tensor::cat(vec![past.keys, k], 2),
                Tensor::cat(vec![past.values, v], 2),
            ),
            None => (k, v),
        };
        *cache = Some(KeyValues {
            keys: k.clone(),
            values: v.clone(),
        });
        let (k, v) = (self.repeat_kv(k), self.repeat_kv(v));
        let keys_len = k.dims()[2];
        let masked = masked.expand([batch, self.num_heads, len, keys_len]);
        // Fully masked rows (a left-padded query) come out as zeros, not NaN.
        let out = attention(
            q,
            k,
            v,
            Some(masked),
            None,
            AttentionModuleOptions::default(),
        );
        let out = out
            .swap_dims(1, 2)
            .reshape([batch, len, self.num_heads * self.head_dim]);
        self.o_proj.forward(out)
    }

    /// Key/value heads repeated so that query head `h` reads kv head `h / group`
    /// (transformers' `repeat_kv`).
    fn repeat_kv(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let group = self.num_heads / self.num_kv_heads;
        if group == 1 {
            return x;
        }
        let [batch, kv_heads, len, dim] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([batch, kv_heads, group, len, dim])
            .reshape([batch, kv_heads * group, len, dim])
    }
}
