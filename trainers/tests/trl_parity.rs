//! Step parity with TRL: with the data in file order, a constant learning rate and no clipping,
//! the first three steps of `dpo_trainer --method dpo` (sigmoid loss), of the same with LoRA,
//! and of `reward_trainer --loss bt` give the losses and the parameters that TRL's
//! `DPOTrainer` (with PEFT) and `RewardTrainer` with `torch.optim.AdamW` give on the same
//! batches, to 1e-4 (`tests/fixtures/trl/generate.py` made the expected values).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fixture, metrics, run_ok, Expected, ScratchFolder};

const TOLERANCE: f32 = 1e-4;

fn trl(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/trl")
        .join(name)
}

/// The optimizer and order settings the fixtures were made with.
fn parity_flags(command: &mut Command, model: &Path, output: &Path) {
    let data = trl("pairs.jsonl");
    command.args(["--model", model.to_str().unwrap()]);
    command.args(["--data", data.to_str().unwrap()]);
    command.args(["--eval-data", data.to_str().unwrap()]);
    command.args(["--output", output.to_str().unwrap()]);
    command.args([
        "--shuffle",
        "false",
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--warmup-ratio",
        "0",
        "--final-lr-ratio",
        "1",
        "--max-grad-norm",
        "0",
        "--weight-decay",
        "0.01",
        "--adam-epsilon",
        "1e-6",
        "--log-every",
        "1",
        "--eval-every",
        "0",
    ]);
}

/// TRL's DPO as the fixtures ran it: sigmoid loss, β 0.1, no NLL term, no SFT.
const DPO_FLAGS: [&str; 12] = [
    "--method",
    "dpo",
    "--loss",
    "sigmoid",
    "--beta",
    "0.1",
    "--rpo-alpha",
    "0",
    "--sft-steps",
    "0",
    "--eval-prompts",
    "0",
];

fn expected_losses(name: &str) -> Vec<f64> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(trl(name)).unwrap()).unwrap();
    json["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn assert_losses(run: &Path, expected: &[f64], what: &str) {
    let losses: Vec<f64> = metrics(run)
        .iter()
        .filter(|r| r.get("phase").is_some())
        .map(|r| r["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), expected.len(), "{what}: {losses:?}");
    for (step, (ours, theirs)) in losses.iter().zip(expected).enumerate() {
        assert!(
            (ours - theirs).abs() < TOLERANCE as f64,
            "{what}, step {}: loss {ours}, TRL {theirs}",
            step + 1
        );
    }
}

/// Every tensor of `expected` (TRL's names) is in `ours` with the same values.
fn assert_tensors(ours: &Path, expected: &Path, what: &str) {
    let (ours, theirs) = (Expected::read(ours), Expected::read(expected));
    let names = ours.names();
    for name in theirs.names() {
        if !names.contains(&name) {
            // A tied head's copy, which a checkpoint need not carry.
            assert_eq!(name, "lm_head.weight", "{what}: {name} missing");
            continue;
        }
        let (x, y) = (ours.f32(&name).0, theirs.f32(&name).0);
        let worst = x
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < TOLERANCE,
            "{what}: {name} differs from TRL's by {worst}"
        );
    }
}

#[test]
fn dpo_steps_match_trl() {
    let out = ScratchFolder::empty("trl-dpo");
    let mut command = Command::new(env!("CARGO_BIN_EXE_dpo_trainer"));
    parity_flags(&mut command, &fixture("llama"), &out.0);
    command.args(DPO_FLAGS);
    run_ok(&mut command);
    assert_losses(&out.0, &expected_losses("dpo.json"), "DPO");
    assert_tensors(
        &out.0.join("model/model.safetensors"),
        &trl("dpo_after.safetensors"),
        "DPO",
    );
}

#[test]
fn lora_dpo_steps_match_trl_with_peft() {
    let out = ScratchFolder::empty("trl-dpo-lora");
    let mut command = Command::new(env!("CARGO_BIN_EXE_dpo_trainer"));
    parity_flags(&mut command, &trl("dpo-lora-initial"), &out.0);
    command.args(DPO_FLAGS);
    run_ok(&mut command);
    assert_losses(&out.0, &expected_losses("dpo_lora.json"), "LoRA DPO");
    assert_tensors(
        &out.0.join("model/adapter_model.safetensors"),
        &trl("dpo_lora_after/adapter_model.safetensors"),
        "LoRA DPO",
    );
}

#[test]
fn reward_steps_match_trl() {
    let out = ScratchFolder::empty("trl-reward");
    let mut command = Command::new(env!("CARGO_BIN_EXE_reward_trainer"));
    parity_flags(&mut command, &trl("reward-model"), &out.0);
    command.args(["--loss", "bt", "--center-rewards", "0"]);
    run_ok(&mut command);
    assert_losses(&out.0, &expected_losses("reward.json"), "reward model");
    assert_tensors(
        &out.0.join("model/model.safetensors"),
        &trl("reward_after.safetensors"),
        "reward model",
    );
}
