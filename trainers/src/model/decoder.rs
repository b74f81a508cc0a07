//! The Llama-family decoder stack shared by the policy and the reward model: token
//! embeddings, pre-norm layers of attention and SwiGLU, and a final RMSNorm.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::activation::silu;
use burn::tensor::{backend::Backend, Bool, Int, Tensor};

use super::attention::{Attention, KeyValues};
use super::config::DecoderConfig;
use super::lora::{LoraConfig, LoraLinear, LoraTarget};
use super::rotary::RotaryTables;
use super::tape::{draw_seed, reseed_layer, LayerTape, Tapes};

/// The SwiGLU feed-forward block: `down(silu(gate(x)) ⊙ up(x))`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `hidden → intermediate`, through SiLU.
    pub gate_proj: LoraLinear<B>,
    /// `hidden → intermediate`.
    pub up_proj: LoraLinear<B>,
    /// `intermediate → hidden`.
    pub down_proj: LoraLinear<B>,
}

impl<B: Backend> Mlp<B> {
    fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        let linear = |d_in, d_out| -> LoraLinear<B> {
            LinearConfig::new(d_in, d_out)
                .with_bias(config.mlp_bias)
                .with_initializer(super::normal_init(config))
                .init(device)
                .into()
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
    pub(super) fn forward(
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

impl<B: Backend> DecoderLayer<B> {
    /// The layer's projections, by PEFT's module names.
    pub fn projections(&self) -> [(LoraTarget, &LoraLinear<B>); 7] {
        let (attn, mlp) = (&self.self_attn, &self.mlp);
        [
            (LoraTarget::QProj, &attn.q_proj),
            (LoraTarget::KProj, &attn.k_proj),
            (LoraTarget::VProj, &attn.v_proj),
            (LoraTarget::OProj, &attn.o_proj),
            (LoraTarget::GateProj, &mlp.gate_proj),
            (LoraTarget::UpProj, &mlp.up_proj),
            (LoraTarget::DownProj, &mlp.down_proj),
        ]
    }

    /// The layer with `f` applied to each projection.
    fn map_projections(
        mut self,
        mut f: impl FnMut(LoraTarget, LoraLinear<B>) -> LoraLinear<B>,
    ) -> Self {
        let (attn, mlp) = (&mut self.self_attn, &mut self.mlp);
        let slots = [
            (LoraTarget::QProj, &mut attn.q_proj),
            (LoraTarget::KProj, &mut attn.k_proj),
            (LoraTarget::VProj, &mut attn.v_proj),
            (LoraTarget::OProj, &mut attn.o_proj),
            (LoraTarget::GateProj, &mut mlp.gate_proj),
            (LoraTarget::UpProj, &mut mlp.up_proj),
            (LoraTarget::DownProj, &mut mlp.down_proj),
        ];
        for (target, slot) in slots {
            // A placeholder while the projection is moved through `f`: no tensor is copied.
            let taken = std::mem::replace(slot, slot.clone().without_lora());
            *slot = f(target, taken);
        }
        self
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
    /// Set by [`Decoder::with_gradient_checkpointing`]: training forwards keep only each
    /// layer's input, and the backward recomputes the layers.
    #[module(skip)]
    checkpointing: Option<Tapes>,
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
            checkpointing: None,
        }
    }

    /// Every layer's projections in `config.targets` with a fresh adapter, and every other
    /// parameter frozen (no gradient, hence no optimizer state): PEFT's `get_peft_model`.
    pub fn with_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        self.no_grad().map_layers(|target, projection| {
            if config.targets.contains(&target) {
                projection.with_lora(config, device)
            } else {
                projection
            }
        })
    }

    /// The adapters' updates merged into the base weights, and the adapters removed (PEFT's
    /// `merge_and_unload`).
    pub fn merge_lora(self) -> Self {
        self.map_layers(|_, projection| projection.merge())
    }

    /// The base decoder with every adapter switched off; it shares the base tensors.
    pub fn without_lora(self) -> Self {
        self.map_layers(|_, projection| projection.without_lora())
    }

    /// Whether any projection carries an adapter.
    pub fn has_lora(&self) -> bool {
        self.layers
            .iter()
            .any(|layer| layer.projections().iter().any(|(_, p)| p.lora.is_some()))
    }

    fn map_layers(mut self, mut f: impl FnMut(LoraTarget, LoraLinear<B>) -> LoraLinear<B>) -> Self {
        self.layers = self
            .layers
            .into_iter()
            .map(|layer| layer.map_projections(&mut f))
            .collect();
        self
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
        // Embeddings held in a lower precision (a bf16 base) come out in the norms' dtype.
        let x = self
            .embed_tokens
            .forward(input_ids.clone())
            .cast(self.compute_dtype());
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
        let training = past == 0 && B::ad_enabled(&device);
        let seed = (training && self.has_dropout()).then(|| draw_seed::<B>(&device));
        if let Some(checkpointing) = self.checkpointing.as_ref().filter(|_| training) {
            return self.forward_checkpointed(input_ids, x, rotary, masked, seed, checkpointing);
        }
        let x = self
            .layers
            .iter()
            .zip(cache.layers.iter_mut())
            .enumerate()
            .fold(x, |x, (index, (layer, layer_cache))| {
                reseed_layer::<B>(&device, seed, index);
                layer.forward(x, &rotary, masked.clone(), layer_cache)
            });
        cache.len = total;
        self.norm.forward(x)
    }

    /// Whether any adapter has dropout (random draws that a checkpointed backward replays).
    fn has_dropout(&self) -> bool {
        self.layers.iter().any(|layer| {
            layer
                .projections()
                .iter()
                .any(|(_, p)| p.lora.as_ref().is_some_and(|a| a.dropout.prob > 0.0))
        })
    }

    /// The layers run without being recorded for autodiff (`seed`: their random draws'); their
    /// inputs are kept on a tape
    /// that [`checkpointing::backward`](super::checkpointing::backward) recomputes from.
    fn forward_checkpointed(
        &self,
        input_ids: Tensor<B, 2, Int>,
        embedded: Tensor<B, 3>,
        rotary: RotaryTables<B>,
        masked: Tensor<B, 4, Bool>,
        seed: Option<u64>,
        checkpointing: &Tapes,
    ) -> Tensor<B, 3> {
        let device = embedded.device();
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = embedded.detach();
        for (index, layer) in self.layers.iter().enumerate() {
            inputs.push(x.clone());
            reseed_layer::<B>(&device, seed, index);
            x = layer
                .clone()
                .no_grad()
                .forward(x, &rotary, masked.clone(), &mut None)
                .detach();
        }
        let leaf = x.require_grad();
        checkpointing.push(LayerTape {
            input_ids,
            inputs,
            rotary,
            masked,
            seed,
            leaf: leaf.clone(),
        });
        self.norm.forward(leaf)
    }

    /// The activations' dtype: the norms' (which stay in it when frozen matrices are held in
    /// a lower one).
    pub fn compute_dtype(&self) -> burn::tensor::DType {
        self.norm.gamma.val().dtype()
    }

    /// The decoder with activation checkpointing on for its training forwards.
    pub fn with_gradient_checkpointing(mut self) -> Self {
        self.checkpointing = Some(Tapes::default());
        self
    }

    /// Where checkpointed forwards leave their tapes, when checkpointing is on.
    pub fn checkpointing(&self) -> Option<&Tapes> {
        self.checkpointing.as_ref()
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
