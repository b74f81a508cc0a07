//! Preference pairs to token ids, with TRL's conventions and a stated truncation rule.
//!
//! - A plain prompt is encoded with the tokenizer's special tokens (BOS where it adds one); a
//!   conversational prompt is rendered with the chat template and an assistant header.
//! - A plain response is encoded without special tokens and EOS is appended. A conversational
//!   response is the part of `prompt + response` rendered by the chat template that follows the
//!   rendered prompt, cut after its last EOS (or with EOS appended when it has none).
//! - Truncation: a prompt longer than `max_prompt_length` keeps its last `max_prompt_length`
//!   tokens (the end of a prompt is what the response answers). A pair whose prompt plus
//!   longer response still exceeds `max_length` is skipped, never cut: a response cut short
//!   loses its EOS and, often, what made it better or worse. Both are counted in the report.

use serde::{Deserialize, Serialize};

use super::records::{Dataset, PreferencePair, Text};
use crate::error::{Error, Result};
use crate::tokenizer::{Message, Tokenizer};

/// A preference pair as token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPair {
    /// The prompt's ids.
    pub prompt: Vec<u32>,
    /// The chosen response's ids, ending with EOS.
    pub chosen: Vec<u32>,
    /// The rejected response's ids, ending with EOS.
    pub rejected: Vec<u32>,
    /// The pair's margin, when the data gives one.
    pub margin: Option<f64>,
    /// One weight per id of `chosen`, when the data gives them (`--method given`).
    pub chosen_weights: Option<Vec<f32>>,
    /// One weight per id of `rejected`, when the data gives them.
    pub rejected_weights: Option<Vec<f32>>,
}

/// Sequence length limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LengthLimits {
    /// The longest prompt + response, in tokens.
    pub max_length: usize,
    /// The longest prompt, in tokens (longer prompts keep their end).
    pub max_prompt_length: usize,
}

/// What tokenization did to a dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenizeReport {
    /// Pairs kept.
    pub kept: usize,
    /// Kept pairs whose prompt was truncated.
    pub prompts_truncated: usize,
    /// Pairs skipped because prompt + response exceeded `max_length`.
    pub skipped_too_long: usize,
}

impl std::fmt::Display for TokenizeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pairs kept, {} skipped as longer than max_length, {} prompts truncated to max_prompt_length",
            self.kept, self.skipped_too_long, self.prompts_truncated
        )
    }
}

/// Tokenizes every pair of `dataset` (see the module docs for the rules). An error names the
/// pair's source line.
pub fn tokenize_dataset(
    dataset: &Dataset,
    tokenizer: &Tokenizer,
    limits: LengthLimits,
) -> Result<(Vec<TokenizedPair>, TokenizeReport)> {
    let mut report = TokenizeReport::default();
    let mut tokenized = Vec::with_capacity(dataset.len());
    for (index, pair) in dataset.pairs.iter().enumerate() {
        let mut ids = tokenize_pair(pair, tokenizer).map_err(|e| {
            Error::Tokenizer(format!("{}: {}", dataset.locate(index), message_of(e)))
        })?;
        let truncated = ids.prompt.len() > limits.max_prompt_length;
        if truncated {
            ids.prompt
                .drain(..ids.prompt.len() - limits.max_prompt_length);
        }
        if ids.prompt.len() + ids.chosen.len().max(ids.rejected.len()) > limits.max_length {
            report.skipped_too_long += 1;
            continue;
        }
        report.prompts_truncated += usize::from(truncated);
        tokenized.push(ids);
    }
    report.kept = tokenized.len();
    Ok((tokenized, report))
}

/// One pair's ids, before truncation.
pub fn tokenize_pair(pair: &PreferencePair, tokenizer: &Tokenizer) -> Result<TokenizedPair> {
    let prompt = match &pair.prompt {
        Text::Plain(text) => tokenizer.encode(text, true)?,
        Text::Conversation(messages) => tokenizer.encode_chat(messages, true)?,
    };
    let chosen = response_ids(&pair.prompt, &pair.chosen, tokenizer, "chosen")?;
    let rejected = response_ids(&pair.prompt, &pair.rejected, tokenizer, "rejected")?;
    Ok(TokenizedPair {
        chosen_weights: token_weights(pair.chosen_weights.as_deref(), &chosen, "chosen")?,
        rejected_weights: token_weights(pair.rejected_weights.as_deref(), &rejected, "rejected")?,
        chosen,
        rejected,
        prompt,
        margin: pair.margin,
    })
}

/// The data's weights of response `name` (`ids`), checked to give one weight per token.
fn token_weights(weights: Option<&[f64]>, ids: &[u32], name: &str) -> Result<Option<Vec<f32>>> {
    let Some(weights) = weights else {
        return Ok(None);
    };
    if weights.len() != ids.len() {
        return Err(Error::Tokenizer(format!(
            "\"{name}_weights\" has {} entries but the {name} response is {} tokens (the \
             end-of-sequence token included): give one weight per token, as the model's \
             tokenizer splits the response",
            weights.len(),
            ids.len()
        )));
    }
    Ok(Some(weights.iter().map(|&w| w as f32).collect()))
}

fn response_ids(
    prompt: &Text,
    response: &Text,
    tokenizer: &Tokenizer,
    name: &str,
) -> Result<Vec<u32>> {
    let eos = tokenizer.eos_id();
    match (prompt, response) {
        (_, Text::Plain(text)) => {
            let mut ids = tokenizer.encode(text, false)?;
            ids.push(eos);
            Ok(ids)
        }
        (Text::Conversation(prompt), Text::Conversation(reply)) => {
            let head = tokenizer.apply_chat_template(prompt, true)?;
            let whole: Vec<Message> = prompt.iter().chain(reply).cloned().collect();
            let whole = tokenizer.apply_chat_template(&whole, false)?;
            let Some(tail) = whole.strip_prefix(head.as_str()) else {
                return Err(Error::Tokenizer(format!(
                    "the chat template renders the prompt differently when \"{name}\" follows \
                     it, so the response cannot be separated from the prompt"
                )));
            };
            let mut ids = tokenizer.encode(tail, false)?;
            match ids.iter().rposition(|&id| id == eos) {
                Some(last) => ids.truncate(last + 1),
                None => ids.push(eos),
            }
            Ok(ids)
        }
        (Text::Plain(_), Text::Conversation(_)) => Err(Error::Tokenizer(format!(
            "\"{name}\" is a list of messages but \"prompt\" is a string; give both as messages \
             or both as strings"
        ))),
    }
}

fn message_of(error: Error) -> String {
    match error {
        Error::Tokenizer(message) => message,
        other => other.to_string(),
    }
}
