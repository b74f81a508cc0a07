//! `config.json` as `transformers` writes it, read into a [`DecoderConfig`], and written back.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};
use crate::model::{DecoderConfig, Family, RopeScaling};

/// The fields of `config.json` that shape the computation. Defaults are `transformers`'
/// defaults for the Llama family.
#[derive(Deserialize)]
struct RawConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default = "default_initializer_range")]
    initializer_range: f64,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_hidden_act() -> String {
    "silu".into()
}
fn default_max_positions() -> usize {
    2048
}
fn default_initializer_range() -> f64 {
    0.02
}

/// Reads `config.json` into the architecture and the file's full JSON (kept to be written back
/// with the fields this crate does not use).
pub(crate) fn read_config(path: &Path) -> Result<(DecoderConfig, Value)> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::invalid(
                path,
                "not found: a Hugging Face model folder needs config.json (the folder as \
                 `save_pretrained` writes it or the hub serves it)",
            )
        } else {
            Error::io(path, e)
        }
    })?;
    let json: Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(path, format!("not valid JSON: {e}")))?;
    let raw: RawConfig =
        serde_json::from_value(json.clone()).map_err(|e| Error::invalid(path, format!("{e}")))?;
    Ok((decoder_config(raw, path)?, json))
}

fn decoder_config(raw: RawConfig, path: &Path) -> Result<DecoderConfig> {
    let unsupported = |message: String| Error::Unsupported {
        path: path.to_path_buf(),
        message,
    };
    let invalid = |message: String| Error::invalid(path, message);
    let family = match raw.model_type.as_str() {
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "mistral" => Family::Mistral,
        other => {
            return Err(unsupported(format!(
                "model_type \"{other}\" is not supported; supported: \"llama\" (Llama, SmolLM), \
                 \"qwen2\" (Qwen2, Qwen2.5), \"mistral\""
            )))
        }
    };
    if raw.hidden_act != "silu" {
        return Err(unsupported(format!(
            "hidden_act \"{}\" is not supported; the Llama family uses \"silu\"",
            raw.hidden_act
        )));
    }
    let num_heads = raw.num_attention_heads;
    let num_kv_heads = raw.num_key_value_heads.unwrap_or(num_heads);
    if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
        return Err(invalid(format!(
            "num_attention_heads ({num_heads}) must be a positive multiple of \
             num_key_value_heads ({num_kv_heads})"
        )));
    }
    let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / num_heads);
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(invalid(format!(
            "head_dim ({head_dim}) must be even and positive for rotary embeddings"
        )));
    }
    // transformers 5 writes `rope_parameters: {rope_theta, rope_type, ...}`; older versions a
    // top-level `rope_theta` and an optional `rope_scaling`.
    let rope = raw.rope_parameters.as_ref().or(raw.rope_scaling.as_ref());
    let rope_theta = raw
        .rope_theta
        .or_else(|| {
            rope.and_then(|r| r.get("rope_theta"))
                .and_then(Value::as_f64)
        })
        .unwrap_or(10_000.0);
    let rope_scaling = rope_scaling(rope, path)?;
    Ok(DecoderConfig {
        family,
        vocab_size: raw.vocab_size,
        hidden_size: raw.hidden_size,
        intermediate_size: raw.intermediate_size,
        num_layers: raw.num_hidden_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        rms_norm_eps: raw.rms_norm_eps,
        rope_theta,
        rope_scaling,
        tie_word_embeddings: raw.tie_word_embeddings,
        // Qwen2 always has q/k/v biases and never an output bias; Llama's `attention_bias`
        // covers all four projections; Mistral has none.
        qkv_bias: family == Family::Qwen2 || (family == Family::Llama && raw.attention_bias),
        o_bias: family == Family::Llama && raw.attention_bias,
        mlp_bias: family == Family::Llama && raw.mlp_bias,
        max_position_embeddings: raw.max_position_embeddings,
        initializer_range: raw.initializer_range,
    })
}

fn rope_scaling(rope: Option<&Value>, path: &Path) -> Result<RopeScaling> {
    let Some(rope) = rope.filter(|r| !r.is_null()) else {
        return Ok(RopeScaling::Default);
    };
    // Older configs name the kind `type`, newer ones `rope_type`.
    let kind = rope
        .get("rope_type")
        .or_else(|| rope.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let number = |key: &str| {
        rope.get(key).and_then(Value::as_f64).ok_or_else(|| {
            Error::invalid(
                path,
                format!("rope type \"{kind}\" needs a numeric \"{key}\" in its rope parameters"),
            )
        })
    };
    match kind {
        "default" => Ok(RopeScaling::Default),
        "linear" => Ok(RopeScaling::Linear {
            factor: number("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original_max_position_embeddings: number("original_max_position_embeddings")?,
        }),
        other => Err(Error::Unsupported {
            path: path.to_path_buf(),
            message: format!(
                "rope type \"{other}\" is not supported; supported: \"default\", \"linear\", \
                 \"llama3\""
            ),
        }),
    }
}

/// The `config.json` to save: the source folder's (every field kept) or, for a model built in
/// code, one written from `config`; with `architectures` and the stored dtype set.
pub(crate) fn config_to_save(
    config: &DecoderConfig,
    source: Option<&Value>,
    architecture: &str,
    dtype_name: &str,
) -> Value {
    let mut json = match source {
        Some(Value::Object(map)) => map.clone(),
        _ => written_from(config),
    };
    json.insert("architectures".into(), json!([architecture]));
    // transformers 5 names the field `dtype`, earlier versions `torch_dtype`; keep the
    // source's spelling.
    let dtype_key = if json.contains_key("dtype") {
        "dtype"
    } else {
        "torch_dtype"
    };
    json.insert(dtype_key.into(), json!(dtype_name));
    Value::Object(json)
}

/// A `config.json` for a model built in code, readable by old and new `transformers`.
fn written_from(config: &DecoderConfig) -> Map<String, Value> {
    let mut json = json!({
        "model_type": config.family.model_type(),
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "tie_word_embeddings": config.tie_word_embeddings,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "initializer_range": config.initializer_range,
    });
    let map = json.as_object_mut().expect("an object literal");
    if config.family == Family::Llama {
        map.insert("attention_bias".into(), json!(config.qkv_bias));
        map.insert("mlp_bias".into(), json!(config.mlp_bias));
    }
    if let Value::Object(scaling) = serde_json::to_value(config.rope_scaling).expect("plain data") {
        if config.rope_scaling != RopeScaling::Default {
            map.insert("rope_scaling".into(), Value::Object(scaling));
        }
    }
    map.clone()
}
