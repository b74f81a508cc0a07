//! The built-in task's tokenizer: one id per character of a fixed alphabet, then EOS and PAD.

use crate::error::{Error, Result};

/// A character vocabulary: ids `0..n` for the alphabet's characters, `n` for EOS, `n + 1`
/// for padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharVocabulary {
    alphabet: Vec<char>,
}

impl CharVocabulary {
    /// A vocabulary of `alphabet`'s characters (each once).
    pub fn new(alphabet: &str) -> Self {
        let mut chars: Vec<char> = Vec::new();
        for c in alphabet.chars() {
            if !chars.contains(&c) {
                chars.push(c);
            }
        }
        Self { alphabet: chars }
    }

    /// The EOS id.
    pub fn eos_id(&self) -> u32 {
        self.alphabet.len() as u32
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.alphabet.len() as u32 + 1
    }

    /// Number of ids, EOS and PAD included.
    pub fn len(&self) -> usize {
        self.alphabet.len() + 2
    }

    /// Whether the alphabet is empty (EOS and PAD only).
    pub fn is_empty(&self) -> bool {
        self.alphabet.is_empty()
    }

    pub(super) fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars()
            .map(|c| {
                self.alphabet
                    .iter()
                    .position(|&a| a == c)
                    .map(|i| i as u32)
                    .ok_or_else(|| {
                        Error::Tokenizer(format!(
                            "character {c:?} in {text:?} is not in the built-in vocabulary {:?}",
                            self.alphabet.iter().collect::<String>()
                        ))
                    })
            })
            .collect()
    }

    pub(super) fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let mut text = String::new();
        for &id in ids {
            match self.alphabet.get(id as usize) {
                Some(&c) => text.push(c),
                None if id == self.eos_id() || id == self.pad_id() => {
                    if !skip_special_tokens {
                        text.push_str(if id == self.eos_id() {
                            "<eos>"
                        } else {
                            "<pad>"
                        });
                    }
                }
                None => {
                    return Err(Error::Tokenizer(format!(
                        "token id {id} is outside the built-in vocabulary (0..{})",
                        self.len()
                    )))
                }
            }
        }
        Ok(text)
    }
}
