//! Both trainers with `--lora-rank`: adapters trained on a Hugging Face folder and saved as a
//! PEFT folder (or merged), an adapter folder given back as `--model`, exact resume across the
//! SFT → DPO merge, and LoRA's flags checked before training.

mod common;

use std::path::Path;
use std::process::Command;

use burn::tensor::Tensor;
use common::{failure, fixture, metrics, run_ok, Expected, ScratchFolder, B};
use otpref_trainers::hub::{
    load_adapted_causal_lm, AdapterFolder, LoadOptions, ModelFolder, ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
};

fn dpo_trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dpo_trainer"))
}

fn reward_trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reward_trainer"))
}

/// Eight preference pairs as JSON lines in `dir/pairs.jsonl`.
fn pairs(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("pairs.jsonl");
    let lines: String = (0..8)
        .map(|i| {
            format!(
                "{{\"prompt\": \"What is {i}+{i}?\", \"chosen\": \" It is {}.\", \"rejected\": \" No idea.\"}}\n",
                2 * i
            )
        })
        .collect();
    std::fs::write(&path, lines).unwrap();
    path.to_str().unwrap().to_string()
}

/// A DPO run of `model` (with LoRA rank 4 on three targets unless `model` is an adapter
/// folder, which brings its own) and `extra` flags.
fn lora_dpo(model: &Path, data: &str, output: &Path, extra: &[&str]) -> Command {
    let mut command = dpo_trainer();
    command.args(["--model", model.to_str().unwrap()]);
    command.args(["--data", data, "--eval-data", data]);
    command.args(["--output", output.to_str().unwrap()]);
    command.args([
        "--method",
        "dpo",
        "--rpo-alpha",
        "0",
        "--sft-steps",
        "0",
        "--steps",
        "8",
        "--batch-size",
        "8",
        "--lr",
        "0.02",
        "--warmup-ratio",
        "0",
        "--log-every",
        "1",
        "--eval-prompts",
        "2",
        "--max-new-tokens",
        "4",
    ]);
    if !model.join(ADAPTER_CONFIG).is_file() {
        command.args([
            "--lora-rank",
            "4",
            "--lora-alpha",
            "8",
            "--lora-targets",
            "q_proj,v_proj,up_proj",
        ]);
    }
    command.args(extra);
    command
}

fn losses(run: &Path) -> Vec<f64> {
    metrics(run)
        .iter()
        .filter_map(|r| r.get("loss")?.as_f64())
        .collect()
}

fn logits(model: &otpref_trainers::model::CausalLm<B>) -> Vec<f32> {
    let expected = Expected::read(&fixture("smollm").join("expected.safetensors"));
    let batch = expected.batch("right");
    let out: Tensor<B, 3> = model.forward(batch.ids, batch.mask).logits;
    out.into_data().to_vec().unwrap()
}

#[test]
fn lora_dpo_trains_adapters_and_saves_a_peft_folder_that_loads_back_and_merges() {
    let out = ScratchFolder::empty("lora-dpo");
    let data = pairs(&out.0);
    let output = run_ok(&mut lora_dpo(
        &fixture("smollm"),
        &data,
        &out.0.join("run"),
        &[],
    ));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("trainable params: "), "{stdout}");
    let trained = losses(&out.0.join("run"));
    // Fresh adapters (B = 0): the policy is its reference on the first step.
    assert!(
        (trained[0] - std::f64::consts::LN_2).abs() < 1e-4,
        "{trained:?}"
    );
    assert!(trained[7] < trained[0] - 0.05, "{trained:?}");

    let saved = out.0.join("run/model");
    assert!(saved.join(ADAPTER_CONFIG).is_file() && saved.join(ADAPTER_WEIGHTS).is_file());
    assert!(!saved.join("model.safetensors").exists());
    let weights = Expected::read(&saved.join(ADAPTER_WEIGHTS));
    // Two layers, three targets, A and B each; nothing else.
    assert_eq!(weights.names().len(), 2 * 3 * 2, "{:?}", weights.names());
    let adapter = AdapterFolder::open(&saved).unwrap();
    assert_eq!(
        std::fs::canonicalize(adapter.base()).unwrap(),
        std::fs::canonicalize(fixture("smollm")).unwrap()
    );
    let device = Default::default();
    let (_, adapted) =
        load_adapted_causal_lm::<B>(&adapter, &LoadOptions::default(), &device).unwrap();
    let base = ModelFolder::open(fixture("smollm"))
        .unwrap()
        .load_causal_lm::<B>(&LoadOptions::default(), &device)
        .unwrap();
    let (adapted_logits, base_logits) = (logits(&adapted), logits(&base));
    let moved = adapted_logits
        .iter()
        .zip(&base_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 1e-3, "the trained adapter changes nothing");

    // The same run with --merge-adapters writes a full folder computing the adapted logits.
    run_ok(&mut lora_dpo(
        &fixture("smollm"),
        &data,
        &out.0.join("merged"),
        &["--merge-adapters"],
    ));
    let merged = ModelFolder::open(out.0.join("merged/model"))
        .unwrap()
        .load_causal_lm::<B>(&LoadOptions::default(), &device)
        .unwrap();
    let diff = logits(&merged)
        .iter()
        .zip(&adapted_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff < 1e-4,
        "merged folder differs from the adapter by {diff}"
    );

    // The adapter folder as --model continues from the trained adapter: the policy starts
    // away from its reference (the base with the adapter off).
    let continued = out.0.join("continued");
    run_ok(&mut lora_dpo(&saved, &data, &continued, &["--steps", "2"]));
    let first = losses(&continued)[0];
    assert!(first < std::f64::consts::LN_2 - 0.01, "{first}");
}

fn model_files(run: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = run.join("model");
    let file = if dir.join(ADAPTER_WEIGHTS).is_file() {
        dir.join(ADAPTER_WEIGHTS)
    } else {
        dir.join("model.safetensors")
    };
    let file = Expected::read(&file);
    file.names()
        .into_iter()
        .map(|n| (n.clone(), file.raw(&n)))
        .collect()
}

/// The built-in run with LoRA through SFT (its adapters merged as DPO starts) and DPO, with
/// dropout on the adapters; a checkpoint inside the DPO phase.
fn built_in_lora(output: &Path) -> Command {
    let mut command = dpo_trainer();
    command.args(common::tiny_builtin(output, 64, 16));
    command.args([
        "--batch-size",
        "4",
        "--sft-steps",
        "4",
        "--steps",
        "6",
        "--eval-every",
        "0",
        "--save-every",
        "5",
        "--eval-prompts",
        "2",
        "--max-new-tokens",
        "4",
        "--lora-rank",
        "2",
        "--lora-dropout",
        "0.1",
        "--lora-targets",
        "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
    ]);
    command
}

#[test]
fn a_resumed_lora_run_ends_where_an_uninterrupted_one_does() {
    let straight = ScratchFolder::empty("lora-straight");
    let output = run_ok(&mut built_in_lora(&straight.0));
    // The built-in model has no folder for an adapter to name: the merged model is saved.
    assert!(String::from_utf8_lossy(&output.stdout).contains("saving the merged model"));
    let resumed = ScratchFolder::empty("lora-resumed");
    run_ok(&mut built_in_lora(&resumed.0));
    std::fs::remove_dir_all(resumed.0.join("checkpoints/step-00000010")).unwrap();
    std::fs::remove_dir_all(resumed.0.join("model")).unwrap();
    let output = run_ok(built_in_lora(&resumed.0).arg("--resume"));
    assert!(String::from_utf8_lossy(&output.stdout).contains("resumed from"));
    let (a, b) = (model_files(&straight.0), model_files(&resumed.0));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x, y, "{name} differs after resuming");
    }
}

/// A LoRA reward-model run on the fixture `llama-reward` at a constant learning rate (add
/// `--steps`; its first steps do not depend on how many follow).
fn lora_reward_flags(data: &str, output: &Path) -> Vec<String> {
    let fixture = fixture("llama-reward");
    [
        "--model",
        fixture.to_str().unwrap(),
        "--data",
        data,
        "--eval-data",
        data,
        "--output",
        output.to_str().unwrap(),
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--warmup-ratio",
        "0",
        "--final-lr-ratio",
        "1",
        "--log-every",
        "1",
        "--lora-rank",
        "4",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn lora_reward_model_trains_adapters_and_the_score_head() {
    let out = ScratchFolder::empty("lora-reward");
    let data = pairs(&out.0);
    let run = out.0.join("run");
    run_ok(
        reward_trainer()
            .args(lora_reward_flags(&data, &run))
            .args(["--steps", "10"]),
    );
    let trained_losses = losses(&run);
    assert!(trained_losses[9] < trained_losses[0], "{trained_losses:?}");
    let adapter = AdapterFolder::open(run.join("model")).unwrap();
    assert!(adapter.is_reward_model());
    let weights = Expected::read(&run.join("model").join(ADAPTER_WEIGHTS));
    let score = "base_model.model.score.weight";
    assert!(weights.names().contains(&score.to_string()));
    let trained = weights.f32(score).0;
    let original = Expected::read(&fixture("llama-reward").join("model.safetensors"));
    assert_ne!(
        trained,
        original.f32("score.weight").0,
        "the score head did not train"
    );

    // The adapter folder as --model loads base + adapters + score head: one step from it
    // starts with the loss of step 11 of an 11-step run (one batch holds all eight pairs).
    let longer = out.0.join("eleven");
    run_ok(
        reward_trainer()
            .args(lora_reward_flags(&data, &longer))
            .args(["--steps", "11"]),
    );
    let continued = out.0.join("continued");
    let adapter_dir = run.join("model");
    run_ok(reward_trainer().args([
        "--model",
        adapter_dir.to_str().unwrap(),
        "--data",
        &data,
        "--eval-data",
        &data,
        "--output",
        continued.to_str().unwrap(),
        "--steps",
        "1",
        "--batch-size",
        "8",
    ]));
    let (eleventh, first) = (losses(&longer)[10], losses(&continued)[0]);
    assert!((eleventh - first).abs() < 1e-5, "{eleventh} vs {first}");
}

#[test]
fn lora_flags_are_checked_before_training() {
    let adapter = fixture("llama-lora");
    let cases: [(&[&str], &str); 6] = [
        (
            &["--lora-rank", "4", "--lora-dropout", "1.5"],
            "--lora-dropout",
        ),
        (&["--lora-rank", "4", "--lora-alpha", "0"], "--lora-alpha"),
        (
            &["--lora-rank", "4", "--lora-targets", "lm_head"],
            "lm_head",
        ),
        (
            &["--merge-adapters"],
            "--merge-adapters needs LoRA adapters",
        ),
        (
            &["--base-dtype", "bf16"],
            "--base-dtype bf16 needs LoRA adapters",
        ),
        (
            &["--model", adapter.to_str().unwrap(), "--lora-rank", "4"],
            "leave out --lora-rank",
        ),
    ];
    for (args, expected) in cases {
        let stderr = failure(env!("CARGO_BIN_EXE_dpo_trainer"), args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn lora_dpo_with_a_bf16_base_and_checkpointing_trains() {
    let out = ScratchFolder::empty("lora-bf16");
    let data = pairs(&out.0);
    let run = out.0.join("run");
    let flags = [
        "--base-dtype",
        "bf16",
        "--gradient-checkpointing",
        "--steps",
        "4",
    ];
    run_ok(&mut lora_dpo(&fixture("smollm"), &data, &run, &flags));
    let trained = losses(&run);
    assert!(
        (trained[0] - std::f64::consts::LN_2).abs() < 1e-4,
        "{trained:?}"
    );
    assert!(trained[3] < trained[0], "{trained:?}");
    let adapter = AdapterFolder::open(run.join("model")).unwrap();
    let weights = Expected::read(&run.join("model").join(ADAPTER_WEIGHTS));
    assert_eq!(weights.dtype(&weights.names()[0]), safetensors::Dtype::F32);
    assert_eq!(adapter.config().rank, 4);
}
