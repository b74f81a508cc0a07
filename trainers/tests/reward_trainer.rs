//! The reward trainer as a user runs it: the built-in task with each loss and label noise, a
//! Hugging Face reward checkpoint with JSON lines, and bad input.

mod common;

use std::path::Path;
use std::process::Command;

use common::{failure, fixture, metrics, run_ok, ScratchFolder};
use serde_json::Value;

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reward_trainer"))
}

fn small_run(output: &Path) -> Command {
    let mut command = trainer();
    command.args(common::tiny_builtin(output, 64, 32));
    command.args([
        "--batch-size",
        "8",
        "--steps",
        "12",
        "--lr",
        "0.005",
        "--log-every",
        "1",
        "--eval-every",
        "0",
    ]);
    command
}

#[test]
fn every_loss_trains_on_the_built_in_task() {
    for loss in ["bt", "hard-margin", "point-margin", "aplot"] {
        let out = ScratchFolder::empty(&format!("reward-{loss}"));
        run_ok(small_run(&out.0).args(["--loss", loss]));
        let records = metrics(&out.0);
        let losses: Vec<f64> = records
            .iter()
            .filter_map(|r| r.get("loss")?.as_f64())
            .collect();
        assert_eq!(losses.len(), 12, "{loss}");
        let early: f64 = losses[..3].iter().sum();
        let late: f64 = losses[9..].iter().sum();
        assert!(late < early, "{loss}: {losses:?}");
        for record in records.iter().filter(|r| r.get("loss").is_some()) {
            for name in [
                "accuracy",
                "margin",
                "rewards/mean",
                "rewards/std",
                "grad_norm",
                "learning_rate",
            ] {
                assert!(
                    record[name].as_f64().is_some_and(f64::is_finite),
                    "{loss}: {name}"
                );
            }
        }
        assert!(records.iter().any(|r| r.get("eval/accuracy").is_some()));
        let folder = otpref_trainers::hub::ModelFolder::open(out.0.join("model")).unwrap();
        assert!(folder.is_reward_model());
        assert!(std::fs::read(out.0.join("curves.png"))
            .unwrap()
            .starts_with(b"\x89PNG"));
        let page = std::fs::read_to_string(out.0.join("margins.html")).unwrap();
        assert_eq!(
            page.matches("<circle").count(),
            8,
            "{loss}: one point per held-out pair of a batch"
        );
    }
}

#[test]
fn label_noise_flips_the_share_asked_for() {
    let out = ScratchFolder::empty("reward-noise");
    let output = run_ok(small_run(&out.0).args(["--label-noise", "1", "--steps", "1"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("64 of 64 training pairs flipped"),
        "{stdout}"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.0.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["flipped"], 64);
}

#[test]
fn a_hugging_face_reward_checkpoint_trains_on_jsonl() {
    let out = ScratchFolder::empty("reward-hf");
    std::fs::create_dir_all(&out.0).unwrap();
    let data = out.0.join("pairs.jsonl");
    let lines: String = (0..8)
        .map(|i| format!("{{\"prompt\": \"What is {i}+1?\", \"chosen\": \" {}\", \"rejected\": \" {}\", \"margin\": 1.0}}\n", i + 1, i + 7))
        .collect();
    std::fs::write(&data, lines).unwrap();
    run_ok(trainer().args([
        "--model",
        fixture("llama-reward").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--eval-data",
        data.to_str().unwrap(),
        "--output",
        out.0.join("run").to_str().unwrap(),
        "--loss",
        "point-margin",
        "--steps",
        "10",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--log-every",
        "1",
    ]));
    let losses: Vec<f64> = metrics(&out.0.join("run"))
        .iter()
        .filter_map(|r| r.get("loss")?.as_f64())
        .collect();
    assert!(losses[9] < losses[0], "{losses:?}");
    assert!(out.0.join("run/model/tokenizer.json").is_file());
}

#[test]
fn bad_input_is_a_one_line_error_before_training() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["--label-noise", "2"],
            "--label-noise must be in [0, 1], got 2",
        ),
        (&["--loss", "magic"], "invalid value 'magic' for '--loss"),
        (
            &["--loss", "aplot", "--batch-size", "1"],
            "--loss aplot needs --batch-size of at least 2",
        ),
        (
            &["--model", "/no/such/model"],
            "--model /no/such/model: no such folder",
        ),
    ];
    for (args, expected) in cases {
        let stderr = failure(env!("CARGO_BIN_EXE_reward_trainer"), args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let out = ScratchFolder::empty("reward-no-margin");
    std::fs::create_dir_all(&out.0).unwrap();
    let data = out.0.join("pairs.jsonl");
    std::fs::write(&data, "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"d\"}\n").unwrap();
    let stderr = failure(
        env!("CARGO_BIN_EXE_reward_trainer"),
        &[
            "--loss",
            "point-margin",
            "--data",
            data.to_str().unwrap(),
            "--model",
            fixture("llama-reward").to_str().unwrap(),
        ],
    );
    assert!(
        stderr.contains("pairs.jsonl line 1") && stderr.contains("\"margin\""),
        "{stderr}"
    );
}
