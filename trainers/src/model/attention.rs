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
        let (heads, kv_heads, dim) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let group = heads / kv_heads;
        // `[batch, len, hidden]` split into heads and rotated there. Query head `h` reads kv
        // head `h / group` (transformers' `repeat_kv`): instead of repeating the keys and
        // values, each kv head's `group` query heads are stacked along the positions, so
        // attention runs per kv head over `group · len` queries with no copy of the keys.
        let split = |t: Tensor<B, 3>, n: usize| t.reshape([batch, len, n, dim]);
        let q = rotary.apply(split(self.q_proj.forward(x.clone()), heads));
        let q = q
            .reshape([batch, len, kv_heads, group, dim])
            .permute([0, 2, 3, 1, 4])
            .reshape([batch, kv_heads, group * len, dim]);
        let k = rotary.apply(split(self.k_proj.forward(x.clone()), kv_heads));
        let k = k.swap_dims(1, 2);
        let v = split(self.v_proj.forward(x), kv_heads).swap_dims(1, 2);
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
        let keys_len = k.dims()[2];
        let masked = masked
            .unsqueeze_dim::<5>(2)
            .expand([batch, kv_heads, group, len, keys_len])
            .reshape([batch, kv_heads, group * len, keys_len]);
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
            .reshape([batch, kv_heads, group, len, dim])
            .permute([0, 3, 1, 2, 4])
            .reshape([batch, len, heads * dim]);
        self.o_proj.forward(out)
    }
}
