//! Models loaded from Hugging Face folders compute what `transformers` computes: logits and
//! last hidden states (policies) and rewards (reward models) to 1e-4 in f32, with right and
//! left padding. The expected values come from `tests/fixtures/hf/generate.py`.

mod common;

use burn::backend::Autodiff;
use burn::module::Module;
use burn::tensor::Tensor;
use common::{fixture, max_diff_at_real_positions, Expected, B};
use otpref_trainers::hub::{LoadOptions, ModelFolder};
use otpref_trainers::model::generate_greedy;

const TOLERANCE: f32 = 1e-4;

fn check_causal_lm(name: &str) {
    let folder = ModelFolder::open(fixture(name)).unwrap();
    let model = folder
        .load_causal_lm::<B>(&LoadOptions::default(), &Default::default())
        .unwrap();
    let expected = Expected::read(&fixture(name).join("expected.safetensors"));
    for side in ["right", "left"] {
        let batch = expected.batch(side);
        let (rows, out) = (batch.rows, model.forward(batch.ids, batch.mask));
        let (logits, _) = expected.f32(&format!("logits_{side}"));
        let (hidden, _) = expected.f32(&format!("hidden_{side}"));
        let logit_diff = max_diff_at_real_positions(out.logits, &logits, &rows);
        let hidden_diff = max_diff_at_real_positions(out.hidden, &hidden, &rows);
        assert!(
            logit_diff < TOLERANCE && hidden_diff < TOLERANCE,
            "{name}, {side} padding: logits differ by {logit_diff}, hidden states by {hidden_diff}"
        );
    }

    // Decoding with the key/value cache (the prompt, then one token at a time) computes the
    // same logits as one pass over the whole left-padded sequence.
    let batch = expected.batch("left");
    let full = model.forward(batch.ids.clone(), batch.mask.clone()).logits;
    let [rows, len] = batch.ids.dims();
    let prefill = len / 2;
    let mut cache = model.model.empty_cache();
    let mut steps = vec![
        model
            .forward_cached(
                batch.ids.clone().slice([0..rows, 0..prefill]),
                batch.mask.clone().slice([0..rows, 0..prefill]),
                &mut cache,
            )
            .logits,
    ];
    for t in prefill..len {
        steps.push(
            model
                .forward_cached(
                    batch.ids.clone().slice([0..rows, t..t + 1]),
                    batch.mask.clone().slice([0..rows, 0..t + 1]),
                    &mut cache,
                )
                .logits,
        );
    }
    let cached = Tensor::cat(steps, 1);
    let full = full.into_data().to_vec::<f32>().unwrap();
    let cache_diff = max_diff_at_real_positions(cached, &full, &batch.rows);
    assert!(
        cache_diff < 1e-5,
        "{name}: cached decoding's logits differ by {cache_diff}"
    );

    // Greedy decoding gives transformers' `generate(do_sample=False)` tokens (cut at EOS).
    let (prompt_ids, shape) = expected.i64("prompt_ids");
    let (prompt_mask, _) = expected.i64("prompt_mask");
    let prompts: Vec<Vec<u32>> = prompt_ids
        .chunks(shape[1])
        .zip(prompt_mask.chunks(shape[1]))
        .map(|(ids, mask)| {
            ids.iter()
                .zip(mask)
                .filter(|(_, &m)| m == 1)
                .map(|(&id, _)| id as u32)
                .collect()
        })
        .collect();
    let (generated, shape) = expected.i64("generated");
    let eos = folder.tokenizer().unwrap().eos_id();
    let ours = generate_greedy(&model, &prompts, shape[1], eos, &Default::default());
    for (row, theirs) in ours.iter().zip(generated.chunks(shape[1])) {
        let theirs: Vec<u32> = theirs
            .iter()
            .map(|&t| t as u32)
            .take_while(|&t| t != eos)
            .collect();
        assert_eq!(row, &theirs, "{name}: greedy tokens");
    }
}

#[test]
fn llama_gqa_untied_llama3_rope_old_config_layout() {
    check_causal_lm("llama");
}

#[test]
fn smollm_tied_embeddings_multi_head() {
    check_causal_lm("smollm");
}

#[test]
fn qwen2_biases_tied_bf16_sharded() {
    check_causal_lm("qwen2");
}

#[test]
fn mistral_f16() {
    check_causal_lm("mistral");
}

#[test]
fn reward_model_reads_the_last_real_token_when_pad_is_eos() {
    let folder = ModelFolder::open(fixture("llama-reward")).unwrap();
    let model = folder
        .load_reward_model::<B>(&LoadOptions::default(), &Default::default())
        .unwrap();
    let expected = Expected::read(&fixture("llama-reward").join("expected.safetensors"));
    for side in ["right", "left"] {
        let batch = expected.batch(side);
        let (rows, out) = (batch.rows, model.forward(batch.ids, batch.mask));
        let (rewards, _) = expected.f32(&format!("rewards_{side}"));
        let (hidden, _) = expected.f32(&format!("hidden_{side}"));
        let actual = out.rewards.into_data().to_vec::<f32>().unwrap();
        for (a, e) in actual.iter().zip(&rewards) {
            assert!(
                (a - e).abs() < TOLERANCE,
                "{side}: reward {a}, transformers {e}"
            );
        }
        let hidden_diff = max_diff_at_real_positions(out.hidden, &hidden, &rows);
        assert!(
            hidden_diff < TOLERANCE,
            "{side}: hidden states differ by {hidden_diff}"
        );
    }
}

#[test]
fn tied_embeddings_are_one_parameter() {
    let tied = ModelFolder::open(fixture("smollm")).unwrap();
    let untied = ModelFolder::open(fixture("mistral")).unwrap();
    let device = Default::default();
    let tied = tied
        .load_causal_lm::<B>(&LoadOptions::default(), &device)
        .unwrap();
    let untied = untied
        .load_causal_lm::<B>(&LoadOptions::default(), &device)
        .unwrap();
    assert!(tied.lm_head.is_none());
    assert!(untied.lm_head.is_some());
    // Each model has exactly the parameters its checkpoint stores: the tied one no second
    // [vocab, hidden] matrix.
    for (name, model_params) in [
        ("smollm", tied.num_params()),
        ("mistral", untied.num_params()),
    ] {
        let weights = Expected::read(&fixture(name).join("model.safetensors"));
        let stored: usize = weights
            .names()
            .iter()
            .map(|n| weights.shape(n).iter().product::<usize>())
            .sum();
        assert_eq!(model_params, stored, "{name}");
    }
}

#[test]
fn gradients_through_left_padding_are_finite() {
    type A = Autodiff<B>;
    let folder = ModelFolder::open(fixture("qwen2")).unwrap();
    let model = folder
        .load_causal_lm::<A>(&LoadOptions::default(), &Default::default())
        .unwrap();
    let expected = Expected::read(&fixture("qwen2").join("expected.safetensors"));
    let batch = expected.batch("left");
    let (ids, mask) = (batch.ids, batch.mask);
    let device = Default::default();
    let ids = Tensor::<A, 2, burn::tensor::Int>::from_data(ids.into_data(), &device);
    let mask = Tensor::<A, 2, burn::tensor::Bool>::from_data(mask.into_data(), &device);
    let out = model.forward(ids, mask);
    // Every position, padded ones included, enters the loss: padding must not make NaN.
    let loss = out.logits.powf_scalar(2.0).mean() + out.hidden.mean();
    let grads = loss.backward();
    let embed = model.model.embed_tokens.weight.grad(&grads).unwrap();
    let values = embed.into_data().to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().any(|&v| v != 0.0));
}

#[test]
fn stored_dtype_can_be_kept() {
    let folder = ModelFolder::open(fixture("qwen2")).unwrap();
    let model = folder
        .load_causal_lm::<B>(
            &LoadOptions {
                dtype: None,
                ..LoadOptions::default()
            },
            &Default::default(),
        )
        .unwrap();
    assert_eq!(
        model.model.embed_tokens.weight.val().dtype(),
        burn::tensor::DType::BF16
    );
}
