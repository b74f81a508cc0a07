//! Saving: a model loaded from a folder and saved again gives the same tensors, under the same
//! names and shapes, in the dtype asked for; `config.json` and the tokenizer come along.

mod common;

use burn::tensor::DType;
use common::{fixture, Expected, ScratchFolder, B};
use otpref_trainers::hub::{LoadOptions, ModelFolder, SaveOptions};

/// The tensors of a folder (one file or all shards), by name.
fn tensors(folder: &std::path::Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            let file = Expected::read(&path);
            for tensor in file.names() {
                all.push((tensor.clone(), file.shape(&tensor), file.raw(&tensor)));
            }
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

fn round_trip(name: &str, stored: DType) {
    let device = Default::default();
    let source = ModelFolder::open(fixture(name)).unwrap();
    let out = ScratchFolder::empty(&format!("save-{name}"));
    // Loaded into f32, saved back in the stored dtype: the bytes must be the original's
    // (bf16/f16 → f32 → bf16/f16 is exact).
    let options = SaveOptions {
        dtype: Some(stored),
    };
    if source.is_reward_model() {
        let model = source
            .load_reward_model::<B>(&LoadOptions::default(), &device)
            .unwrap();
        source.save_reward_model(&model, &out.0, &options).unwrap();
    } else {
        let model = source
            .load_causal_lm::<B>(&LoadOptions::default(), &device)
            .unwrap();
        source.save_causal_lm(&model, &out.0, &options).unwrap();
    }
    let original = tensors(&fixture(name));
    let saved = tensors(&out.0);
    let names =
        |t: &[(String, Vec<usize>, Vec<u8>)]| t.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&saved), names(&original), "{name}: tensor names");
    for ((key, shape, bytes), (_, saved_shape, saved_bytes)) in original.iter().zip(&saved) {
        assert_eq!(saved_shape, shape, "{name}: shape of {key}");
        assert!(saved_bytes == bytes, "{name}: values of {key} changed");
    }

    // Loading the saved folder gives the same architecture, tokenizer and head kind.
    let reopened = ModelFolder::open(&out.0).unwrap();
    assert_eq!(reopened.config(), source.config(), "{name}");
    assert_eq!(reopened.is_reward_model(), source.is_reward_model());
    let text = "What is 12+35?";
    assert_eq!(
        reopened.tokenizer().unwrap().encode(text, true).unwrap(),
        source.tokenizer().unwrap().encode(text, true).unwrap()
    );
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.0.join("config.json")).unwrap()).unwrap();
    let dtype_field = config.get("dtype").or(config.get("torch_dtype")).unwrap();
    let expected_name = match stored {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    };
    assert_eq!(dtype_field, expected_name);
}

#[test]
fn llama_round_trip() {
    round_trip("llama", DType::F32);
}

#[test]
fn qwen2_sharded_bf16_round_trip_into_one_file() {
    round_trip("qwen2", DType::BF16);
}

#[test]
fn mistral_f16_round_trip() {
    round_trip("mistral", DType::F16);
}

#[test]
fn tied_round_trip_writes_no_separate_head() {
    round_trip("smollm", DType::F32);
}

#[test]
fn reward_model_round_trip() {
    round_trip("llama-reward", DType::F32);
}

#[test]
fn reward_model_from_a_language_model_gets_a_fresh_head() {
    let device = Default::default();
    let base = ModelFolder::open(fixture("mistral")).unwrap();
    let model = base
        .load_reward_model_from_base::<B>(&LoadOptions::default(), &device)
        .unwrap();
    assert_eq!(model.score.weight.dims(), [base.config().hidden_size, 1]);
    // Its decoder is the language model's.
    let policy = base
        .load_causal_lm::<B>(&LoadOptions::default(), &device)
        .unwrap();
    let a = model.model.embed_tokens.weight.val().into_data();
    let b = policy.model.embed_tokens.weight.val().into_data();
    assert_eq!(a, b);
    // Saved, it is a sequence classifier with one label.
    let out = ScratchFolder::empty("reward-from-base");
    base.save_reward_model(&model, &out.0, &SaveOptions::default())
        .unwrap();
    let reopened = ModelFolder::open(&out.0).unwrap();
    assert!(reopened.is_reward_model());
    let saved = Expected::read(&out.0.join("model.safetensors"));
    assert_eq!(
        saved.shape("score.weight"),
        vec![1, base.config().hidden_size]
    );
    assert!(!saved.names().contains(&"lm_head.weight".to_string()));
}
