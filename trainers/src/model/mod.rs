//! Llama-family language models (Llama, Qwen2, Mistral, SmolLM) in burn: the policy
//! ([`CausalLm`]) and the reward model ([`RewardModel`]) share one [`Decoder`].
//!
//! Module and field names follow `transformers`, so a checkpoint's tensor names are the paths
//! of the parameters here (see [`crate::hub`] for loading and saving).

mod attention;
mod causal_lm;
pub mod checkpointing;
mod config;
mod decoder;
mod generate;
pub mod head;
mod lora;
mod projection;
mod reward;
mod rotary;
mod sample;
mod tape;

pub use attention::{Attention, KeyValues};
pub use causal_lm::{next_token_logps, CausalLm, CausalLmOutput, TokenLogps};
pub use config::{DecoderConfig, Family, RopeScaling};
pub use decoder::{Decoder, DecoderCache, DecoderLayer, Mlp};
pub use generate::{generate_greedy, left_padded};
pub use lora::{cast_frozen_matrices, LoraAdapter, LoraConfig, LoraLinear, LoraTarget};
pub(crate) use reward::new_score_head;
pub use reward::{last_real_position, RewardModel, RewardOutput};
pub use rotary::RotaryTables;
pub use sample::{generate_sampled, Sampling};
pub use tape::Tapes;

use burn::nn::Initializer;

/// `transformers`' initialisation of fresh weights: normal with std `initializer_range`; zeros
/// when that is 0 (the same, without drawing a random number per weight: for weights that a
/// checkpoint overwrites next, see [`DecoderConfig::to_be_loaded`]).
fn normal_init(config: &DecoderConfig) -> Initializer {
    if config.initializer_range == 0.0 {
        return Initializer::Zeros;
    }
    Initializer::Normal {
        mean: 0.0,
        std: config.initializer_range,
    }
}
