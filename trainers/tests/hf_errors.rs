//! Bad model folders get errors that name the file and what is wrong in it, before any
//! weight is loaded.

mod common;

use common::{fixture, ScratchFolder, B};
use otpref_trainers::hub::{LoadOptions, ModelFolder};
use otpref_trainers::Error;

fn load_error(folder: &ScratchFolder) -> String {
    let opened = ModelFolder::open(&folder.0);
    let error = match opened {
        Err(e) => e,
        Ok(folder) => folder
            .load_causal_lm::<B>(&LoadOptions::default(), &Default::default())
            .expect_err("loading should fail"),
    };
    error.to_string()
}

#[test]
fn missing_config_json() {
    let folder = ScratchFolder::copy_of("smollm", "no-config");
    std::fs::remove_file(folder.0.join("config.json")).unwrap();
    let message = load_error(&folder);
    assert!(
        message.contains("config.json") && message.contains("not found"),
        "{message}"
    );
}

#[test]
fn folder_that_does_not_exist() {
    let message = ModelFolder::open("/no/such/model").unwrap_err().to_string();
    assert!(
        message.contains("/no/such/model") && message.contains("not a folder"),
        "{message}"
    );
}

#[test]
fn unsupported_model_type() {
    let folder = ScratchFolder::copy_of("smollm", "gpt2");
    folder.edit_config(|c| c["model_type"] = "gpt2".into());
    let error = ModelFolder::open(&folder.0).unwrap_err();
    assert!(matches!(error, Error::Unsupported { .. }));
    let message = error.to_string();
    assert!(
        message.contains("\"gpt2\"") && message.contains("\"qwen2\""),
        "{message}"
    );
}

#[test]
fn unsupported_rope_type() {
    let folder = ScratchFolder::copy_of("llama", "yarn");
    folder.edit_config(|c| c["rope_scaling"]["rope_type"] = "yarn".into());
    let message = ModelFolder::open(&folder.0).unwrap_err().to_string();
    assert!(message.contains("\"yarn\""), "{message}");
}

#[test]
fn tensor_of_the_wrong_shape() {
    let folder = ScratchFolder::copy_of("smollm", "shape");
    folder.edit_config(|c| c["intermediate_size"] = 48.into());
    let message = load_error(&folder);
    assert!(
        message.contains("model.layers.0.mlp.gate_proj.weight")
            && message.contains("[64, 32]")
            && message.contains("[48, 32]"),
        "{message}"
    );
}

#[test]
fn missing_and_unexpected_tensors_are_named() {
    let folder = ScratchFolder::copy_of("mistral", "layers");
    folder.edit_config(|c| c["num_hidden_layers"] = 3.into());
    let message = load_error(&folder);
    assert!(
        message.contains("missing tensors: model.layers.2."),
        "{message}"
    );

    let folder = ScratchFolder::copy_of("mistral", "fewer-layers");
    folder.edit_config(|c| c["num_hidden_layers"] = 1.into());
    let message = load_error(&folder);
    assert!(
        message.contains("unexpected tensors: model.layers.1."),
        "{message}"
    );
}

#[test]
fn untied_config_over_a_tied_checkpoint_misses_the_head() {
    let folder = ScratchFolder::copy_of("smollm", "untie");
    folder.edit_config(|c| c["tie_word_embeddings"] = false.into());
    let message = load_error(&folder);
    assert!(
        message.contains("missing tensors: lm_head.weight"),
        "{message}"
    );
}

#[test]
fn missing_shard() {
    let folder = ScratchFolder::copy_of("qwen2", "shard");
    std::fs::remove_file(folder.0.join("model-00002-of-00002.safetensors")).unwrap();
    let message = ModelFolder::open(&folder.0).unwrap_err().to_string();
    assert!(
        message.contains("model.safetensors.index.json")
            && message.contains("model-00002-of-00002.safetensors")
            && message.contains("missing"),
        "{message}"
    );
}

#[test]
fn no_weights_at_all() {
    let folder = ScratchFolder::copy_of("smollm", "no-weights");
    std::fs::remove_file(folder.0.join("model.safetensors")).unwrap();
    let message = ModelFolder::open(&folder.0).unwrap_err().to_string();
    assert!(message.contains("no model.safetensors"), "{message}");
}

#[test]
fn tokenizer_larger_than_the_embedding() {
    let folder = ScratchFolder::copy_of("smollm", "vocab");
    folder.edit_config(|c| c["vocab_size"] = 100.into());
    let opened = ModelFolder::open(&folder.0).unwrap();
    let message = opened.tokenizer().unwrap_err().to_string();
    assert!(
        message.contains("tokenizer.json") && message.contains("vocab_size is 100"),
        "{message}"
    );
}

#[test]
fn reward_and_language_model_heads_are_not_confused() {
    let device = Default::default();
    let reward = ModelFolder::open(fixture("llama-reward")).unwrap();
    let message = reward
        .load_causal_lm::<B>(&LoadOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(message.contains("load_reward_model"), "{message}");
    let policy = ModelFolder::open(fixture("smollm")).unwrap();
    let message = policy
        .load_reward_model::<B>(&LoadOptions::default(), &device)
        .unwrap_err()
        .to_string();
    assert!(message.contains("load_reward_model_from_base"), "{message}");
}
