//! The memory plan: its parameter counts are the models' own (every fixture family, LoRA,
//! reward heads), more memory is predicted for what needs more, and `--plan` prints it without
//! training. (Its predictions against measured peaks are in docs/benchmarks.md.)

mod common;

use burn::backend::Autodiff;
use common::{failure, fixture, run_ok, ScratchFolder, B};

/// Trainable parameters are told apart by autodiff.
type A = Autodiff<B>;
use otpref_trainers::hub::{LoadOptions, ModelFolder};
use otpref_trainers::model::{LoraConfig, LoraTarget};
use otpref_trainers::training::plan::{largest_batch, parameter_counts, plan, PlanInput};
use otpref_trainers::training::ParameterCounts;

fn input(name: &str, lora: Option<LoraConfig>, language_model: bool) -> PlanInput {
    PlanInput {
        config: ModelFolder::open(fixture(name)).unwrap().config().clone(),
        batch_pairs: 4,
        length: 64,
        lora,
        checkpointing: false,
        reference_copy: false,
        language_model,
        frozen_bytes: 4.0,
        devices: 1,
        optimizer_shards: 1,
    }
}

#[test]
fn parameter_counts_are_the_models_own() {
    let device = Default::default();
    let mut lora = LoraConfig::new(3);
    lora.targets = LoraTarget::ALL.to_vec();
    for name in ["llama", "smollm", "qwen2", "mistral"] {
        let folder = ModelFolder::open(fixture(name)).unwrap();
        let model = folder
            .load_causal_lm::<A>(&LoadOptions::default(), &device)
            .unwrap();
        let counts = ParameterCounts::of(&model);
        let (total, _) = parameter_counts(&input(name, None, true));
        assert_eq!(total, counts.total, "{name}");
        let adapted = ParameterCounts::of(&model.with_lora(&lora, &device));
        let planned = parameter_counts(&input(name, Some(lora.clone()), true));
        assert_eq!(
            planned,
            (adapted.total, adapted.trainable),
            "{name} with LoRA"
        );
    }
    let folder = ModelFolder::open(fixture("llama-reward")).unwrap();
    let model = folder
        .load_reward_model::<A>(&LoadOptions::default(), &device)
        .unwrap();
    let counts = ParameterCounts::of(&model.with_lora(&lora, &device));
    let planned = parameter_counts(&input("llama-reward", Some(lora), false));
    assert_eq!(
        planned,
        (counts.total, counts.trainable),
        "reward model with LoRA"
    );
}

#[test]
fn the_plan_grows_with_what_needs_memory() {
    let full = input("llama", None, true);
    let base = plan(&full).total();
    let mut bigger = full.clone();
    bigger.batch_pairs = 8;
    assert!(plan(&bigger).activations > 1.9 * plan(&full).activations);
    let mut with_reference = full.clone();
    with_reference.reference_copy = true;
    assert!(plan(&with_reference).total() > base);
    let mut lora = full.clone();
    lora.lora = Some(LoraConfig::new(4));
    let lora_plan = plan(&lora);
    assert!(lora_plan.optimizer < plan(&full).optimizer / 10.0);
    // Sharded over 4 replicas, each keeps a quarter of AdamW's two f32 moments; nothing
    // else changes.
    let mut sharded = full.clone();
    sharded.optimizer_shards = 4;
    let trained = parameter_counts(&full).1 as f64;
    assert_eq!(plan(&sharded).optimizer, 2.0 * 4.0 * trained / 4.0);
    assert_eq!(
        plan(&sharded).total(),
        base - plan(&full).optimizer + plan(&sharded).optimizer
    );
    let mut checkpointed = lora.clone();
    checkpointed.checkpointing = true;
    assert!(plan(&checkpointed).activations < lora_plan.activations);
    // The largest batch within a budget is one whose plan fits, and the next one does not.
    let budget = plan(&full).total() * 3.0;
    let batch = largest_batch(&full, budget).unwrap();
    let at = |b: usize| {
        let mut x = full.clone();
        x.batch_pairs = b;
        plan(&x).total()
    };
    assert!(at(batch) <= budget && at(batch + 1) > budget);
}

#[test]
fn plan_flag_prints_the_plan_without_training() {
    let out = ScratchFolder::empty("plan");
    let output = run_ok(
        std::process::Command::new(env!("CARGO_BIN_EXE_dpo_trainer")).args([
            "--plan",
            "--memory-budget",
            "8",
            "--lora-rank",
            "4",
            "--gradient-checkpointing",
            "--output",
            out.0.to_str().unwrap(),
        ]),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "activations",
        "optimizer",
        "total",
        "largest --batch-size within 8 GiB",
    ] {
        assert!(stdout.contains(expected), "{stdout}");
    }
    assert!(!out.0.exists(), "--plan trains nothing and writes nothing");
    let stderr = failure(
        env!("CARGO_BIN_EXE_reward_trainer"),
        &["--memory-budget", "8"],
    );
    assert!(
        stderr.contains("--memory-budget goes with --plan"),
        "{stderr}"
    );
}

/// Llama-3.1-8B's shape, as its config.json gives it.
fn llama_8b() -> otpref_trainers::model::DecoderConfig {
    let mut config = otpref_trainers::model::DecoderConfig::tiny(128_256, 4096, 32);
    config.intermediate_size = 14_336;
    config.num_heads = 32;
    config.num_kv_heads = 8;
    config.head_dim = 128;
    config.tie_word_embeddings = false;
    config
}

/// The claim docs/trainers.md makes: Llama-3.1-8B, LoRA r16 on the attention projections,
/// checkpointing, 1024 tokens, micro-batch 4, fits one 80 GB GPU with the base in bf16 and in
/// f32 alike. `cargo test --test plan -- --nocapture` prints the plans.
#[test]
fn llama_8b_with_lora_and_checkpointing_fits_one_80_gb_gpu() {
    let mut input = PlanInput {
        config: llama_8b(),
        batch_pairs: 4,
        length: 1024,
        lora: Some(LoraConfig::new(16)),
        checkpointing: true,
        reference_copy: false,
        language_model: true,
        frozen_bytes: 2.0,
        devices: 1,
        optimizer_shards: 1,
    };
    let (total, trained) = parameter_counts(&input);
    assert!((8.0e9..8.1e9).contains(&(total as f64)), "{total}");
    assert_eq!(
        trained,
        32 * 16 * (2 * 4096 + 4096 + 1024 + 4096 + 1024 + 4096 + 4096)
    );
    let gb80 = 80e9;
    for bytes in [2.0, 4.0] {
        input.frozen_bytes = bytes;
        let predicted = plan(&input);
        println!("base at {bytes} bytes per weight:\n{predicted}");
        assert!(predicted.total() < gb80, "{predicted}");
    }
    // Without adapters and checkpointing (f32, a reference copy) it does not.
    input.lora = None;
    input.checkpointing = false;
    input.reference_copy = true;
    input.frozen_bytes = 4.0;
    assert!(plan(&input).total() > gb80);
}
