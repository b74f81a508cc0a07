//! Preference data as TRL writes it: one JSON object per line with `prompt`, `chosen` and
//! `rejected` (strings, or lists of `{role, content}` messages) and an optional `margin`; and,
//! for `dpo_trainer --method given`, optional per-token weights `chosen_weights` and
//! `rejected_weights` (one finite, non-negative number per response token).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::tokenizer::Message;

/// A prompt or a response: plain text, or a conversation rendered with the chat template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Text {
    /// Used as it is.
    Plain(String),
    /// Messages (`{role, content}`), rendered with the model's chat template.
    Conversation(Vec<Message>),
}

/// One preference pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    /// What both responses answer.
    pub prompt: Text,
    /// The preferred response.
    pub chosen: Text,
    /// The dispreferred response.
    pub rejected: Text,
    /// How much better `chosen` is (TRL's reward-trainer `margin` column), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
    /// One weight per token of the chosen response as the model's tokenizer splits it,
    /// end-of-sequence token included (`dpo_trainer --method given`), when the data gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chosen_weights: Option<Vec<f64>>,
    /// The rejected response's weights, as `chosen_weights`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_weights: Option<Vec<f64>>,
}

/// Preference pairs with where each came from, so that a problem found later (a chat
/// template that refuses a conversation) still names its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Where the pairs came from (a file, or the built-in task).
    pub source: String,
    /// The pairs.
    pub pairs: Vec<PreferencePair>,
    /// Each pair's line number in `source` (1-based).
    pub lines: Vec<usize>,
}

impl Dataset {
    /// Pairs made in code, numbered from 1.
    pub fn from_pairs(source: impl Into<String>, pairs: Vec<PreferencePair>) -> Self {
        Self {
            source: source.into(),
            lines: (1..=pairs.len()).collect(),
            pairs,
        }
    }

    /// "FILE line N" for pair `index`.
    pub fn locate(&self, index: usize) -> String {
        format!("{} line {}", self.source, self.lines[index])
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// Reads a JSON-lines file of preference pairs. Blank lines are skipped; any other line that
/// is not a valid pair is an error naming the file, the line and what is wrong. A UTF-8
/// byte-order mark at the start (as Windows tools write one) is skipped.
pub fn read_jsonl(path: &Path) -> Result<Dataset> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut pairs = Vec::new();
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        pairs.push(
            parse_line(line).map_err(|message| {
                Error::invalid(path, format!("line {}: {message}", index + 1))
            })?,
        );
        lines.push(index + 1);
    }
    if pairs.is_empty() {
        return Err(Error::invalid(path, "holds no preference pairs"));
    }
    Ok(Dataset {
        source: path.display().to_string(),
        pairs,
        lines,
    })
}

/// Writes pairs as JSON lines (the format [`read_jsonl`] reads).
pub fn write_jsonl(path: &Path, pairs: &[PreferencePair]) -> Result<()> {
    let mut text = String::new();
    for pair in pairs {
        text.push_str(&serde_json::to_string(pair).expect("pairs serialise"));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn parse_line(line: &str) -> std::result::Result<PreferencePair, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("expected a JSON object with prompt, chosen and rejected")?;
    let field = |name: &str| -> std::result::Result<Text, String> {
        let value = object.get(name).ok_or_else(|| {
            if name == "prompt" {
                "missing \"prompt\" (pairs whose chosen and rejected conversations carry the \
                 prompt, TRL's implicit-prompt format, are not read: move the shared messages \
                 into \"prompt\")"
                    .to_string()
            } else {
                format!("missing \"{name}\"")
            }
        })?;
        text(value).map_err(|e| format!("\"{name}\": {e}"))
    };
    let margin = match object.get("margin") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_f64()
                .filter(|m| m.is_finite())
                .ok_or("\"margin\" must be a finite number")?,
        ),
    };
    Ok(PreferencePair {
        prompt: field("prompt")?,
        chosen: field("chosen")?,
        rejected: field("rejected")?,
        margin,
        chosen_weights: token_weights(object, "chosen_weights")?,
        rejected_weights: token_weights(object, "rejected_weights")?,
    })
}

/// The optional per-token weights `name`: a list of finite numbers, 0 or more.
fn token_weights(
    object: &serde_json::Map<String, Value>,
    name: &str,
) -> std::result::Result<Option<Vec<f64>>, String> {
    let items = match object.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("\"{name}\" must be a list of numbers")),
    };
    let weights = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_f64()
                .filter(|w| w.is_finite() && *w >= 0.0 && *w <= f32::MAX as f64)
                .ok_or_else(|| format!("\"{name}\" entry {i} is {item}: token weights must be finite numbers, 0 or more"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Some(weights))
}

fn text(value: &Value) -> std::result::Result<Text, String> {
    match value {
        Value::String(s) => Ok(Text::Plain(s.clone())),
        Value::Array(items) => {
            let messages = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    serde_json::from_value::<Message>(item.clone()).map_err(|_| {
                        format!(
                            "message {i} must be an object with string \"role\" and \"content\""
                        )
                    })
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
            if messages.is_empty() {
                return Err("an empty list of messages".into());
            }
            Ok(Text::Conversation(messages))
        }
        _ => Err("must be a string or a list of {role, content} messages".into()),
    }
}
