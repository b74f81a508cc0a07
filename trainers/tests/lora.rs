//! LoRA adapters against PEFT itself: adapters that `peft` made on the tiny fixtures
//! (`tests/fixtures/hf/peft_generate.py`, random non-zero `lora_A` and `lora_B`) give the
//! logits and rewards `peft` computed; saved adapters have PEFT's names, layouts and values;
//! merging, switching adapters off and freezing do what PEFT's do.

mod common;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::Tensor;
use common::{fixture, max_diff_at_real_positions, Expected, ScratchFolder, B};
use otpref_trainers::hub::{
    load_adapted_causal_lm, load_adapted_reward_model, save_adapter, AdapterFolder, AdapterTask,
    LoadOptions, ModelFolder, ADAPTER_WEIGHTS,
};
use otpref_trainers::model::{CausalLm, LoraConfig, LoraTarget};

const TOLERANCE: f32 = 1e-4;

fn adapted_policy() -> CausalLm<B> {
    let adapter = AdapterFolder::open(fixture("llama-lora")).unwrap();
    load_adapted_causal_lm::<B>(&adapter, &LoadOptions::default(), &Default::default())
        .unwrap()
        .1
}

fn logits_diff(model: &CausalLm<B>, expected: &Expected, side: &str) -> f32 {
    let batch = expected.batch(side);
    let (logits, _) = expected.f32(&format!("logits_{side}"));
    let out = model.forward(batch.ids, batch.mask);
    max_diff_at_real_positions(out.logits, &logits, &batch.rows)
}

#[test]
fn peft_adapter_on_a_policy_gives_peft_logits() {
    let adapter = AdapterFolder::open(fixture("llama-lora")).unwrap();
    assert_eq!(adapter.config().rank, 4);
    assert_eq!(adapter.config().targets, LoraTarget::ALL.to_vec());
    let model = adapted_policy();
    let expected = Expected::read(&fixture("llama-lora").join("expected.safetensors"));
    for side in ["right", "left"] {
        let diff = logits_diff(&model, &expected, side);
        assert!(
            diff < TOLERANCE,
            "{side} padding: logits differ from peft's by {diff}"
        );
    }
}

#[test]
fn peft_adapter_on_a_reward_model_gives_peft_rewards() {
    let adapter = AdapterFolder::open(fixture("llama-reward-lora")).unwrap();
    assert!(adapter.is_reward_model() && adapter.config().use_rslora);
    let (_, model) =
        load_adapted_reward_model::<B>(&adapter, &LoadOptions::default(), &Default::default())
            .unwrap();
    let expected = Expected::read(&fixture("llama-reward-lora").join("expected.safetensors"));
    for side in ["right", "left"] {
        let batch = expected.batch(side);
        let (rewards, _) = expected.f32(&format!("rewards_{side}"));
        let actual = model
            .forward(batch.ids, batch.mask)
            .rewards
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        for (a, e) in actual.iter().zip(&rewards) {
            assert!((a - e).abs() < TOLERANCE, "{side}: reward {a}, peft {e}");
        }
    }
}

#[test]
fn switching_adapters_off_gives_the_base_model_and_merging_keeps_the_logits() {
    let model = adapted_policy();
    // The base's logits as transformers computed them (generate.py), with adapters off.
    let base_expected = Expected::read(&fixture("llama").join("expected.safetensors"));
    let diff = logits_diff(&model.clone().without_lora(), &base_expected, "right");
    assert!(diff < TOLERANCE, "adapters off: {diff} from the base model");
    let expected = Expected::read(&fixture("llama-lora").join("expected.safetensors"));
    let merged = model.merge_lora();
    assert!(!merged.model.has_lora());
    let diff = logits_diff(&merged, &expected, "left");
    assert!(
        diff < TOLERANCE,
        "merged: logits differ from peft's by {diff}"
    );
}

#[test]
fn saved_adapter_has_peft_names_layouts_and_values_and_loads_back() {
    let model = adapted_policy();
    let adapter = AdapterFolder::open(fixture("llama-lora")).unwrap();
    let out = ScratchFolder::empty("lora-save");
    let base = std::fs::canonicalize(fixture("llama")).unwrap();
    save_adapter(
        &model,
        adapter.config(),
        AdapterTask::CausalLm,
        base.to_str().unwrap(),
        &out.0,
    )
    .unwrap();
    // The same tensors, by name, shape and value, as in the file peft wrote.
    let ours = Expected::read(&out.0.join(ADAPTER_WEIGHTS));
    let peft = Expected::read(&fixture("llama-lora").join(ADAPTER_WEIGHTS));
    assert_eq!(ours.names(), peft.names());
    for name in peft.names() {
        assert_eq!(ours.shape(&name), peft.shape(&name), "{name}");
        assert_eq!(ours.f32(&name).0, peft.f32(&name).0, "{name}");
    }
    // And it loads back: same logits as peft's.
    let reopened = AdapterFolder::open(&out.0).unwrap();
    assert_eq!(reopened.config(), adapter.config());
    let (_, loaded) =
        load_adapted_causal_lm::<B>(&reopened, &LoadOptions::default(), &Default::default())
            .unwrap();
    let expected = Expected::read(&fixture("llama-lora").join("expected.safetensors"));
    let diff = logits_diff(&loaded, &expected, "right");
    assert!(diff < TOLERANCE, "reloaded adapter: {diff}");
}

#[test]
fn saved_reward_adapter_keeps_the_score_head() {
    let adapter = AdapterFolder::open(fixture("llama-reward-lora")).unwrap();
    let (_, model) =
        load_adapted_reward_model::<B>(&adapter, &LoadOptions::default(), &Default::default())
            .unwrap();
    let out = ScratchFolder::empty("lora-reward-save");
    let base = std::fs::canonicalize(fixture("llama-reward")).unwrap();
    save_adapter(
        &model,
        adapter.config(),
        AdapterTask::RewardModel,
        base.to_str().unwrap(),
        &out.0,
    )
    .unwrap();
    let ours = Expected::read(&out.0.join(ADAPTER_WEIGHTS));
    let peft = Expected::read(&fixture("llama-reward-lora").join(ADAPTER_WEIGHTS));
    assert_eq!(ours.names(), peft.names());
    let score = "base_model.model.score.weight";
    assert_eq!(ours.f32(score).0, peft.f32(score).0);
}

/// Counts the parameters that require a gradient.
struct Trainable(usize);

impl<BB: burn::tensor::backend::Backend> ModuleVisitor<BB> for Trainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<BB, D>>) {
        self.0 += param.val().is_require_grad() as usize;
    }
}

#[test]
fn only_adapters_train_and_the_base_stays_bit_identical() {
    type A = Autodiff<B>;
    let device = Default::default();
    let folder = ModelFolder::open(fixture("llama")).unwrap();
    let config = LoraConfig::new(2);
    let model = folder
        .load_causal_lm::<A>(&LoadOptions::default(), &device)
        .unwrap()
        .with_lora(&config, &device);
    let mut trainable = Trainable(0);
    model.visit(&mut trainable);
    // Two layers, four attention projections, A and B each.
    assert_eq!(trainable.0, 2 * 4 * 2);

    let expected = Expected::read(&fixture("llama").join("expected.safetensors"));
    let batch = expected.batch("right");
    let ids = Tensor::<A, 2, burn::tensor::Int>::from_data(batch.ids.into_data(), &device);
    let mask = Tensor::<A, 2, burn::tensor::Bool>::from_data(batch.mask.into_data(), &device);
    let base_before = model.clone().without_lora().valid();
    let mut optimizer = AdamWConfig::new().init::<A, CausalLm<A>>();
    let mut model = model;
    for _ in 0..2 {
        let loss = model
            .forward(ids.clone(), mask.clone())
            .logits
            .powi_scalar(2)
            .mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(grads.len(), 2 * 4 * 2, "gradients for the adapters only");
        model = optimizer.step(1e-2, model, grads);
    }
    let after = model.clone().without_lora().valid();
    let weights = |m: &CausalLm<B>| {
        m.model.layers[0]
            .self_attn
            .q_proj
            .base
            .weight
            .val()
            .into_data()
    };
    assert_eq!(weights(&base_before), weights(&after), "the base moved");
    let embed = |m: &CausalLm<B>| m.model.embed_tokens.weight.val().into_data();
    assert_eq!(embed(&base_before), embed(&after), "the embeddings moved");
    // The adapters did move: B started at zero.
    let b = model.model.layers[0]
        .self_attn
        .q_proj
        .lora
        .as_ref()
        .unwrap();
    let b_max = b.lora_b.weight.val().abs().max().into_scalar();
    assert!(b_max > 0.0, "lora_B is still zero");
}

#[test]
fn adapter_configs_this_decoder_cannot_apply_are_refused_by_name() {
    let cases: [(&str, serde_json::Value, &str); 3] = [
        ("use_dora", serde_json::json!(true), "use_dora"),
        (
            "target_modules",
            serde_json::json!(["q_proj", "lm_head"]),
            "lm_head",
        ),
        ("peft_type", serde_json::json!("IA3"), "IA3"),
    ];
    for (key, value, named) in cases {
        let scratch = ScratchFolder::copy_of("llama-lora", key);
        let path = scratch.0.join("adapter_config.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        json[key] = value;
        json["base_model_name_or_path"] =
            serde_json::json!(std::fs::canonicalize(fixture("llama")).unwrap());
        std::fs::write(&path, json.to_string()).unwrap();
        let message = AdapterFolder::open(&scratch.0).unwrap_err().to_string();
        assert!(message.contains(named), "{key}: {message}");
    }
}

#[test]
fn a_bf16_base_computes_what_f32_computes_on_its_rounded_weights() {
    use burn::tensor::DType;
    type A = Autodiff<B>;
    let device = Default::default();
    let adapter = AdapterFolder::open(fixture("llama-lora")).unwrap();
    // On autodiff, where the adapters are told apart from the frozen base by their gradients.
    let (_, model) =
        load_adapted_causal_lm::<A>(&adapter, &LoadOptions::default(), &device).unwrap();
    let bf16 = model.clone().with_frozen_dtype(DType::BF16);
    let layer = &bf16.model.layers[0].self_attn.q_proj;
    assert_eq!(layer.base.weight.val().dtype(), DType::BF16);
    let lora_a = &layer.lora.as_ref().unwrap().lora_a.weight;
    assert_eq!(lora_a.val().dtype(), DType::F32, "adapters stay f32");
    assert_eq!(
        bf16.model.norm.gamma.val().dtype(),
        DType::F32,
        "norms stay f32"
    );
    // The same values in f32: rounded through bf16 and back (exact), computed in f32.
    let rounded = bf16.clone().with_frozen_dtype(DType::F32);
    let expected = Expected::read(&fixture("llama-lora").join("expected.safetensors"));
    let batch = expected.batch("right");
    let ids = Tensor::<A, 2, burn::tensor::Int>::from_data(batch.ids.into_data(), &device);
    let mask = Tensor::<A, 2, burn::tensor::Bool>::from_data(batch.mask.into_data(), &device);
    let logits = |m: &CausalLm<A>| -> Vec<f32> {
        m.forward(ids.clone(), mask.clone())
            .logits
            .into_data()
            .to_vec()
            .unwrap()
    };
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let (half, full) = (logits(&bf16), logits(&rounded));
    assert!(worst(&half, &full) < 1e-5, "bf16 base vs its values in f32");
    // Rounding the base to bf16 does change the outputs (the comparison above sees a mix-up).
    assert!(
        worst(&half, &logits(&model)) > 1e-6,
        "bf16 rounding changed nothing"
    );
    // Merging keeps the base's dtype.
    let merged = bf16.merge_lora();
    let base = &merged.model.layers[0].self_attn.q_proj.base.weight;
    assert_eq!(base.val().dtype(), DType::BF16);
}

/// Every float parameter's dtype and values (in f32), in the module's order.
fn parameters<M: Module<Autodiff<B>>>(model: &M) -> Vec<(burn::tensor::DType, Vec<f32>)> {
    struct Collect(Vec<(burn::tensor::DType, Vec<f32>)>);
    impl ModuleVisitor<Autodiff<B>> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Autodiff<B>, D>>) {
            let value = param.val();
            let data = value.clone().into_data().convert::<f32>();
            self.0.push((value.dtype(), data.to_vec().unwrap()));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// `x` rounded to bf16 (to nearest, ties to even, as torch's `.to(torch.bfloat16)`), in f32.
fn bf16_rounded(x: f32) -> f32 {
    let bits = x.to_bits();
    f32::from_bits(((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16)
}

/// Asserts that `read` holds `f32`'s parameters, those it holds in bf16 rounded as torch
/// rounds them; names the first parameter that differs.
fn assert_rounded_where_bf16<M: Module<Autodiff<B>>>(read: &M, f32: &M) -> usize {
    let (read, f32) = (parameters(read), parameters(f32));
    assert_eq!(read.len(), f32.len());
    let mut in_bf16 = 0;
    for (i, ((dtype, got), (_, full))) in read.iter().zip(&f32).enumerate() {
        let bf16 = *dtype == burn::tensor::DType::BF16;
        in_bf16 += usize::from(bf16);
        let expected: Vec<f32> = match bf16 {
            true => full.iter().map(|&x| bf16_rounded(x)).collect(),
            false => full.clone(),
        };
        assert!(got == &expected, "parameter {i} ({dtype:?}) differs");
    }
    in_bf16
}

/// `--base-dtype bf16` reads each matrix of the base in bf16 as it loads (the model never
/// exists in f32 as a whole): the f32 model's values rounded as torch rounds them, the norms
/// and adapters in f32; a reward model's trained score head stays f32.
#[test]
fn a_bf16_base_read_as_bf16_is_the_f32_base_rounded_as_torch_rounds() {
    use burn::tensor::DType;
    type A = Autodiff<B>;
    let device = Default::default();
    let bf16 = LoadOptions {
        matrices_dtype: Some(DType::BF16),
        ..LoadOptions::default()
    };
    let f32 = LoadOptions::default();
    let policy = AdapterFolder::open(fixture("llama-lora")).unwrap();
    let (_, read) = load_adapted_causal_lm::<A>(&policy, &bf16, &device).unwrap();
    let (_, full) = load_adapted_causal_lm::<A>(&policy, &f32, &device).unwrap();
    // 2 layers × 7 projections, the embedding and the untied head.
    assert_eq!(assert_rounded_where_bf16(&read, &full), 16);
    let adapter = &read.model.layers[0]
        .self_attn
        .q_proj
        .lora
        .as_ref()
        .unwrap()
        .lora_a;
    assert_eq!(
        adapter.weight.val().dtype(),
        DType::F32,
        "adapters stay f32"
    );

    let reward = AdapterFolder::open(fixture("llama-reward-lora")).unwrap();
    let (_, read) = load_adapted_reward_model::<A>(&reward, &bf16, &device).unwrap();
    let (_, full) = load_adapted_reward_model::<A>(&reward, &f32, &device).unwrap();
    assert_eq!(
        read.score.weight.val().dtype(),
        DType::F32,
        "the score head trains"
    );
    assert!(assert_rounded_where_bf16(&read, &full) > 0);
}
