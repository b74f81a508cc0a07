//! K sampled answers per prompt, the raw material of on-policy pairs and of best-of-n.

use burn::tensor::backend::Backend;
use clap::Args;
use serde::{Deserialize, Serialize};

use super::dpo_eval::EvalPrompt;
use crate::data::Text;
use crate::error::Result;
use crate::model::{generate_sampled, CausalLm, Sampling};
use crate::tokenizer::{Message, Tokenizer};

/// Rows decoded together (prompts × samples).
const ROWS_PER_BATCH: usize = 64;

/// The sampling flags (`transformers`' `generate(do_sample=True, ...)` settings).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct SamplingArgs {
    /// Sampling temperature (0: greedy decoding, which makes all samples of a prompt equal).
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "one")]
    pub temperature: f64,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1: all).
    #[arg(long, default_value_t = 1.0)]
    #[serde(default = "one")]
    pub top_p: f64,
    /// Keep only the K most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub top_k: usize,
}

fn one() -> f64 {
    1.0
}

impl SamplingArgs {
    /// The sampling settings, seeded with `seed`.
    pub fn sampling(&self, seed: u64) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
        }
    }
}

/// How many samples per prompt, drawn how, and how long.
#[derive(Debug, Clone, Copy)]
pub struct SampleSettings {
    /// Samples per prompt.
    pub per_prompt: usize,
    /// How each token is drawn.
    pub sampling: Sampling,
    /// Longest sample, in tokens.
    pub max_new_tokens: usize,
}

/// `settings.per_prompt` sampled answers for each of `prompts`, as text. Sample `j` of prompt
/// `i` draws from stream `i·K + j` of the seed, so the samples do not depend on how the prompts
/// are batched.
pub fn sample_answers<B: Backend>(
    model: &CausalLm<B>,
    prompts: &[EvalPrompt],
    tokenizer: &Tokenizer,
    settings: &SampleSettings,
    device: &B::Device,
) -> Result<Vec<Vec<String>>> {
    let k = settings.per_prompt;
    let per_batch = (ROWS_PER_BATCH / k).max(1);
    let mut answers = Vec::with_capacity(prompts.len());
    for (chunk_index, chunk) in prompts.chunks(per_batch).enumerate() {
        let rows: Vec<Vec<u32>> = chunk
            .iter()
            .flat_map(|p| std::iter::repeat_n(p.ids.clone(), k))
            .collect();
        let first_stream = (chunk_index * per_batch * k) as u64;
        let outputs = generate_sampled(
            model,
            &rows,
            settings.max_new_tokens,
            tokenizer.eos_id(),
            &settings.sampling,
            first_stream,
            device,
        );
        for samples in outputs.chunks(k) {
            answers.push(
                samples
                    .iter()
                    .map(|ids| tokenizer.decode(ids, true))
                    .collect::<Result<Vec<_>>>()?,
            );
        }
    }
    Ok(answers)
}

/// A sampled answer as a response to `prompt` in TRL's format: plain text after a plain
/// prompt, an assistant message after a conversation.
pub fn as_response(prompt: &Text, answer: &str) -> Text {
    match prompt {
        Text::Plain(_) => Text::Plain(answer.to_owned()),
        Text::Conversation(_) => Text::Conversation(vec![Message::new("assistant", answer)]),
    }
}
