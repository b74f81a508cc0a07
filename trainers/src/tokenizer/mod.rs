//! Text to token ids: a Hugging Face `tokenizer.json` (through the `tokenizers` crate, pure
//! Rust) or the built-in task's character vocabulary, behind one [`Tokenizer`] type, with the
//! model's chat template for conversations.

mod characters;
mod chat_template;

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
pub use characters::CharVocabulary;
pub use chat_template::ChatTemplate;

/// One message of a conversation, as TRL's conversational format writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message from `role` (`system`, `user`, `assistant`).
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone)]
enum Vocabulary {
    HuggingFace(Box<tokenizers::Tokenizer>),
    Characters(CharVocabulary),
}

/// A tokenizer with its EOS and padding tokens and, when the model has one, its chat template.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    vocabulary: Vocabulary,
    eos_id: u32,
    pad_id: u32,
    chat_template: Option<ChatTemplate>,
}

impl Tokenizer {
    /// Reads a Hugging Face folder's `tokenizer.json`, its special tokens from
    /// `tokenizer_config.json` (falling back to `config.json`'s ids, given as `model_config`),
    /// and its chat template (`chat_template.jinja`, or `chat_template` in
    /// `tokenizer_config.json`). Without a padding token, EOS pads.
    pub fn from_folder(folder: &Path, model_config: Option<&Value>) -> Result<Self> {
        let path = folder.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::invalid(
                &path,
                "not found: the model folder needs its tokenizer.json",
            ));
        }
        let tokenizer = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| Error::invalid(&path, format!("not a readable tokenizer: {e}")))?;
        let config_path = folder.join("tokenizer_config.json");
        let config: Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::invalid(&config_path, format!("not valid JSON: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
            Err(e) => return Err(Error::io(&config_path, e)),
        };
        let token = |key: &str| special_token(&config, key);
        let id_of = |key: &str| -> Result<Option<u32>> {
            let Some(text) = token(key) else {
                return Ok(None);
            };
            tokenizer.token_to_id(&text).map(Some).ok_or_else(|| {
                Error::invalid(
                    &config_path,
                    format!("{key} \"{text}\" is not in tokenizer.json's vocabulary"),
                )
            })
        };
        let config_id = |key: &str| {
            let value = model_config?.get(key)?;
            // `eos_token_id` may be a list; the first is the one appended to responses.
            value.get(0).unwrap_or(value).as_u64().map(|id| id as u32)
        };
        let eos_id = match id_of("eos_token")? {
            Some(id) => id,
            None => config_id("eos_token_id").ok_or_else(|| {
                Error::invalid(
                    &config_path,
                    "no EOS token: set eos_token here or eos_token_id in config.json",
                )
            })?,
        };
        let pad_id = id_of("pad_token")?
            .or_else(|| config_id("pad_token_id"))
            .unwrap_or(eos_id);
        let template_source = chat_template::find(folder, &config)?;
        let chat_template = template_source
            .map(|source| {
                ChatTemplate::new(
                    &source,
                    token("bos_token").unwrap_or_default(),
                    token("eos_token").unwrap_or_default(),
                )
            })
            .transpose()?;
        Ok(Self {
            vocabulary: Vocabulary::HuggingFace(Box::new(tokenizer)),
            eos_id,
            pad_id,
            chat_template,
        })
    }

    /// The built-in task's tokenizer: one id per character of `vocabulary`, then EOS and PAD.
    pub fn characters(vocabulary: CharVocabulary) -> Self {
        Self {
            eos_id: vocabulary.eos_id(),
            pad_id: vocabulary.pad_id(),
            vocabulary: Vocabulary::Characters(vocabulary),
            chat_template: None,
        }
    }

    /// Token ids of `text`. `add_special_tokens` adds what the tokenizer's post-processor adds
    /// (BOS for Llama 3); EOS is never added here.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        match &self.vocabulary {
            Vocabulary::HuggingFace(tokenizer) => tokenizer
                .encode(text, add_special_tokens)
                .map(|encoding| encoding.get_ids().to_vec())
                .map_err(|e| Error::Tokenizer(format!("could not tokenize {text:?}: {e}"))),
            Vocabulary::Characters(chars) => chars.encode(text),
        }
    }

    /// The text of `ids`, special tokens left out when `skip_special_tokens`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        match &self.vocabulary {
            Vocabulary::HuggingFace(tokenizer) => tokenizer
                .decode(ids, skip_special_tokens)
                .map_err(|e| Error::Tokenizer(format!("could not decode {ids:?}: {e}"))),
            Vocabulary::Characters(chars) => chars.decode(ids, skip_special_tokens),
        }
    }

    /// `messages` rendered with the chat template (`add_generation_prompt`: end with the
    /// header of an assistant turn).
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.chat_template.as_ref().ok_or_else(|| {
            Error::Tokenizer(
                "this tokenizer has no chat template, so conversational data (lists of \
                 {role, content} messages) cannot be rendered; give prompts and responses as \
                 plain strings, or use a model with chat_template in tokenizer_config.json"
                    .into(),
            )
        })?;
        template.render(messages, add_generation_prompt)
    }

    /// Token ids of a rendered conversation. As in `transformers`, the rendered text is
    /// encoded without adding special tokens: the template already has them (no double BOS).
    pub fn encode_chat(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }

    /// Whether conversations can be rendered.
    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// The end-of-sequence id (appended to responses).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The padding id (EOS when the tokenizer defines none). Padding is recognised by the
    /// attention mask, never by this id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// One more than the largest token id (the embedding rows the model needs).
    pub fn vocab_size(&self) -> usize {
        match &self.vocabulary {
            Vocabulary::HuggingFace(tokenizer) => tokenizer
                .get_vocab(true)
                .values()
                .max()
                .map_or(0, |&max| max as usize + 1),
            Vocabulary::Characters(chars) => chars.len(),
        }
    }
}

/// A special token's text from `tokenizer_config.json`: a string, or an object with
/// `content` (older files).
fn special_token(config: &Value, key: &str) -> Option<String> {
    let value = config.get(key)?;
    value
        .as_str()
        .or_else(|| value.get("content")?.as_str())
        .map(String::from)
}
