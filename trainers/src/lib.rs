//! # otpref-trainers
//!
//! What the bundled reward-model and DPO trainers are built from, one job per module:
//!
//! - [`model`]: Llama-family decoders (Llama, Qwen2, Mistral, SmolLM) as a policy with a
//!   language-model head or a reward model with a scalar head; LoRA adapters, activation
//!   checkpointing and log-probabilities computed over chunks of the head;
//! - [`hub`]: Hugging Face model folders: `config.json`, safetensors weights (single or
//!   sharded, f32/f16/bf16) loaded into those models and saved back in the same format; PEFT
//!   adapter folders read and written;
//! - [`tokenizer`]: `tokenizer.json` through the `tokenizers` crate, chat templates through
//!   `minijinja`, and the character-level tokenizer of the built-in task behind the same type;
//! - [`data`]: TRL's preference format (JSON lines) read, tokenized, truncated and collated;
//! - [`task`]: the built-in task (worked three-digit addition) with its confounds and scoring;
//! - [`training`]: the one training loop and its parts (schedule, global-norm clipping,
//!   checkpoints, metrics, progress, Ctrl-C, data-parallel replicas), and the memory plan;
//! - [`methods`]: the preference methods' loss assembly (SFT, the DPO family, the reward
//!   model) as flags select them;
//! - [`run`]: the trainer programs' bodies (`src/bin/*` parse the command line and call in).
//!
//! The losses and optimal transport live in the `otpref` library; this crate is kept apart so
//! the library's own dependencies stay two.
#![deny(missing_docs)]

pub mod data;
pub mod error;
pub mod hub;
pub mod methods;
pub mod model;
pub mod run;
pub mod task;
pub mod tokenizer;
pub mod training;

pub use error::{Error, Result};

/// The models guide's snippets compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/models.md")]
struct ModelsGuide;
