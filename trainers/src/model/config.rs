//! The architecture of a Llama-family decoder: everything `config.json` says that changes the
//! computation, in one struct that the model is built from.

use serde::{Deserialize, Serialize};

/// Which Hugging Face model family a decoder belongs to. The families differ only in the
/// details recorded in [`DecoderConfig`] (biases, tying); the computation is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `model_type: "llama"`: Llama 2/3.x, SmolLM/SmolLM2, TinyLlama.
    Llama,
    /// `model_type: "qwen2"`: Qwen2, Qwen2.5 (biases on the q/k/v projections).
    Qwen2,
    /// `model_type: "mistral"`: Mistral 7B and its derivatives.
    Mistral,
}

impl Family {
    /// The `model_type` string of `config.json`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
        }
    }

    /// The prefix of the `transformers` class names (`LlamaForCausalLM`, ...).
    pub fn class_prefix(self) -> &'static str {
        match self {
            Family::Llama => "Llama",
            Family::Qwen2 => "Qwen2",
            Family::Mistral => "Mistral",
        }
    }
}

/// How rotary frequencies are rescaled for long contexts (`rope_scaling` /
/// `rope_parameters` in `config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// No rescaling (`rope_type: "default"`).
    Default,
    /// Positions divided by `factor` (`rope_type: "linear"`).
    Linear {
        /// The position divisor.
        factor: f64,
    },
    /// Llama 3.1's frequency-dependent rescaling (`rope_type: "llama3"`).
    Llama3 {
        /// Divisor for the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_position_embeddings / low_freq_factor` are divided.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_position_embeddings / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_position_embeddings: f64,
    },
}

/// The architecture of a Llama-family decoder (Llama, Qwen2, Mistral, SmolLM).
///
/// Read from a Hugging Face `config.json` by [`crate::hub::ModelFolder`], or written in code
/// for a model trained from scratch (see [`DecoderConfig::tiny`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecoderConfig {
    /// The model family.
    pub family: Family,
    /// Rows of the embedding matrix (and of the output head).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Epsilon of every RMSNorm.
    pub rms_norm_eps: f64,
    /// Base of the rotary frequencies.
    pub rope_theta: f64,
    /// Long-context rescaling of the rotary frequencies.
    pub rope_scaling: RopeScaling,
    /// Whether the output head is the embedding matrix itself (one parameter).
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2; Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    /// Biases on the feed-forward projections (Llama with `mlp_bias`).
    pub mlp_bias: bool,
    /// The longest sequence the model was built for.
    pub max_position_embeddings: usize,
    /// Standard deviation of freshly initialised weights (e.g. a new reward head).
    pub initializer_range: f64,
}

impl DecoderConfig {
    /// A small Llama for training from scratch on the built-in tasks.
    pub fn tiny(vocab_size: usize, hidden_size: usize, num_layers: usize) -> Self {
        let num_heads = 4;
        Self {
            family: Family::Llama,
            vocab_size,
            hidden_size,
            intermediate_size: 4 * hidden_size,
            num_layers,
            num_heads,
            num_kv_heads: num_heads,
            head_dim: hidden_size / num_heads,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            rope_scaling: RopeScaling::Default,
            tie_word_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            max_position_embeddings: 512,
            initializer_range: 0.02,
        }
    }

    /// The same architecture with weights initialised to zero instead of drawn at random
    /// (`initializer_range` 0): for a model whose weights a checkpoint overwrites next, where
    /// drawing them would only cost time (seconds at 100M parameters).
    pub fn to_be_loaded(&self) -> Self {
        Self {
            initializer_range: 0.0,
            ..self.clone()
        }
    }

    /// The rotary inverse frequencies `θ^(-2i/d)` for `i < head_dim / 2`, rescaled as
    /// `rope_scaling` says. Computed in f32 as `transformers` does.
    pub fn inverse_frequencies(&self) -> Vec<f32> {
        let dim = self.head_dim;
        let base = self.rope_theta as f32;
        let plain = (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32));
        match self.rope_scaling {
            RopeScaling::Default => plain.collect(),
            RopeScaling::Linear { factor } => plain.map(|f| f / factor as f32).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: context,
            } => {
                // transformers' `_compute_llama3_parameters`: long wavelengths are divided by
                // `factor`, short ones kept, the band between interpolated.
                let (factor, low, high, context) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                    context as f32,
                );
                let low_freq_wavelen = context / low;
                let high_freq_wavelen = context / high;
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        let divided = if wavelen > low_freq_wavelen {
                            f / factor
                        } else {
                            f
                        };
                        let medium = (high_freq_wavelen..=low_freq_wavelen).contains(&wavelen);
                        if medium {
                            let smooth = (context / wavelen - low) / (high - low);
                            (1.0 - smooth) * divided / factor + smooth * divided
                        } else {
                            divided
                        }
                    })
                    .collect()
            }
        }
    }
}
