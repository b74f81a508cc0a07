//! A model's chat template (Jinja) rendered with `minijinja`, set up as `transformers` sets up
//! Jinja: `trim_blocks`, `lstrip_blocks`, loop controls, Python string methods, `tojson`,
//! `raise_exception`, and the special tokens as variables.

use std::path::Path;

use minijinja::{context, Environment, ErrorKind};
use serde_json::Value;

use super::Message;
use crate::error::{Error, Result};

const NAME: &str = "chat_template";

/// A compiled chat template with the special tokens it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    environment: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// Compiles `source`; `bos_token`/`eos_token` are the texts the template sees.
    pub fn new(source: &str, bos_token: String, eos_token: String) -> Result<Self> {
        let mut environment = Environment::new();
        environment.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("a valid syntax"),
        );
        // `message.content.strip()`, `.startswith(...)` and friends, as templates written
        // for Python's Jinja use them.
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        environment
            .add_template_owned(NAME, source.to_string())
            .map_err(|e| Error::Tokenizer(format!("the chat template does not compile: {e}")))?;
        Ok(Self {
            environment,
            bos_token,
            eos_token,
        })
    }

    /// The conversation as text, as `tokenizer.apply_chat_template(messages, tokenize=False)`
    /// renders it.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self.environment.get_template(NAME).expect("added in new()");
        template
            .render(context! {
                messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| {
                // `raise_exception` messages are the template author's words to the user.
                let detail = e
                    .detail()
                    .map(String::from)
                    .unwrap_or_else(|| e.to_string());
                Error::Tokenizer(format!(
                    "the chat template refused the conversation: {detail}"
                ))
            })
    }
}

/// The template source: `chat_template.jinja` (newer `transformers`), else `chat_template` in
/// `tokenizer_config.json`, a string or a list of named templates (the one named `default`).
pub(super) fn find(folder: &Path, tokenizer_config: &Value) -> Result<Option<String>> {
    let file = folder.join("chat_template.jinja");
    if file.is_file() {
        return std::fs::read_to_string(&file)
            .map(Some)
            .map_err(|e| Error::io(&file, e));
    }
    Ok(match tokenizer_config.get("chat_template") {
        Some(Value::String(source)) => Some(source.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template")?.as_str())
            .map(String::from),
        _ => None,
    })
}
