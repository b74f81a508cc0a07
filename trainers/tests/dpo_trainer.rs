//! The DPO trainer as a user runs it: the built-in task and a Hugging Face folder with JSON
//! lines, metrics and checkpoints, and bad input (resume and interruptions: interruptions.rs).

mod common;

use std::path::Path;
use std::process::Command;

use common::{failure, fixture, metrics, run_ok, ScratchFolder};
use serde_json::Value;

fn trainer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dpo_trainer"))
}

/// A small, fast built-in run (tiny model, few pairs) writing to `output`.
fn small_run(output: &Path) -> Command {
    let mut command = trainer();
    command.args(common::tiny_builtin(output, 64, 16));
    command.args([
        "--batch-size",
        "4",
        "--sft-steps",
        "4",
        "--steps",
        "6",
        "--log-every",
        "1",
        "--eval-every",
        "3",
        "--save-every",
        "5",
        "--eval-prompts",
        "4",
        "--max-new-tokens",
        "8",
    ]);
    command
}

#[test]
fn built_in_run_writes_metrics_checkpoints_summary_and_a_model() {
    let out = ScratchFolder::empty("dpo-builtin");
    let output = run_ok(&mut small_run(&out.0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("step     1/10 sft"), "{stdout}");
    assert!(stdout.contains("held-out pairs"), "{stdout}");
    let records = metrics(&out.0);
    let dpo: Vec<&Value> = records.iter().filter(|r| r["phase"] == "dpo").collect();
    assert_eq!(dpo.len(), 6);
    for name in [
        "loss",
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
        "grad_norm",
        "learning_rate",
        "num_tokens",
        "otpref/weight_time_share",
    ] {
        for record in &dpo {
            assert!(
                record[name].as_f64().is_some_and(f64::is_finite),
                "{name} in {record}"
            );
        }
    }
    assert!(records.iter().any(|r| r.get("eval/rewards/ties").is_some()));
    // The newest checkpoints are kept; the model folder loads as a Hugging Face folder.
    assert!(out.0.join("checkpoints/step-00000010").is_dir());
    assert!(out.0.join("checkpoints/step-00000005").is_dir());
    let folder = otpref_trainers::hub::ModelFolder::open(out.0.join("model")).unwrap();
    assert_eq!(folder.config().hidden_size, 16);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.0.join("summary.json")).unwrap())
            .unwrap();
    // A worked answer ("7+8=15,4+5+1=10,3+2+1=6:605") is over 20 characters: generations cut
    // at --max-new-tokens 8 cannot hold one, so neither model may be counted a success.
    for model in ["policy", "reference"] {
        assert_eq!(
            summary[model]["success_rate"].as_f64(),
            Some(0.0),
            "{model}"
        );
        let length = summary[model]["mean_length"].as_f64().unwrap();
        assert!((0.0..=8.0).contains(&length), "{model}: {length}");
    }
    let png = std::fs::read(out.0.join("curves.png")).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "curves.png is a drawn PNG"
    );
    let page = std::fs::read_to_string(out.0.join("weights.html")).unwrap();
    assert!(page.contains("Otpo token weights") && page.contains("rejected"));
    assert!(!page.contains("<script"), "self-contained, no scripts");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.0.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["method"], "otpo");
    assert_eq!(config["steps"], 6);
}

#[test]
fn loss_falls_on_a_hugging_face_model_with_jsonl_data() {
    let out = ScratchFolder::empty("dpo-hf");
    std::fs::create_dir_all(&out.0).unwrap();
    let data = out.0.join("pairs.jsonl");
    let mut lines = String::new();
    for i in 0..8 {
        if i % 2 == 0 {
            lines += &format!(
                "{{\"prompt\": \"What is {i}+{i}?\", \"chosen\": \" It is {}.\", \"rejected\": \" No idea.\"}}\n",
                2 * i
            );
        } else {
            lines += &format!(
                "{{\"prompt\": [{{\"role\": \"user\", \"content\": \"Hello {i}\"}}], \"chosen\": [{{\"role\": \"assistant\", \"content\": \"Hi, how can I help?\"}}], \"rejected\": [{{\"role\": \"assistant\", \"content\": \"Go away.\"}}]}}\n"
            );
        }
    }
    std::fs::write(&data, lines).unwrap();
    let mut command = trainer();
    command.args([
        "--model",
        fixture("smollm").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--eval-data",
        data.to_str().unwrap(),
        "--output",
        out.0.join("run").to_str().unwrap(),
        "--method",
        "dpo",
        // The DPO loss alone, so that its start is exactly ln 2.
        "--rpo-alpha",
        "0",
        "--sft-steps",
        "0",
        "--steps",
        "12",
        "--batch-size",
        "8",
        "--lr",
        "0.01",
        "--warmup-ratio",
        "0",
        "--log-every",
        "1",
        "--eval-prompts",
        "2",
        "--max-new-tokens",
        "4",
    ]);
    run_ok(&mut command);
    let losses: Vec<f64> = metrics(&out.0.join("run"))
        .iter()
        .filter_map(|r| r.get("loss")?.as_f64())
        .collect();
    assert_eq!(losses.len(), 12);
    assert!(
        (losses[0] - std::f64::consts::LN_2).abs() < 1e-3,
        "policy = reference at the start: {losses:?}"
    );
    assert!(losses[11] < losses[0] - 0.1, "{losses:?}");
    // The trained model is saved with the source's tokenizer, as a transformers folder.
    let saved = out.0.join("run/model");
    assert!(saved.join("tokenizer.json").is_file() && saved.join("chat_template.jinja").is_file());
}

/// `--rpo-alpha α` adds α times the chosen responses' per-token NLL to the loss: on the first
/// DPO step (same seed, same model, same batch) the two runs' losses differ by exactly that.
#[test]
fn rpo_alpha_adds_the_chosen_nll_to_the_loss() {
    let first_dpo_step = |alpha: &str| {
        let out = ScratchFolder::empty(&format!("rpo-{alpha}"));
        run_ok(small_run(&out.0).args(["--steps", "1", "--rpo-alpha", alpha]));
        let records = metrics(&out.0);
        let dpo = records
            .iter()
            .find(|r| r["phase"] == "dpo")
            .expect("a DPO record")
            .clone();
        (
            dpo["loss"].as_f64().unwrap(),
            dpo["nll_loss"].as_f64().unwrap(),
        )
    };
    let (plain, nll) = first_dpo_step("0");
    let (with_nll, nll_again) = first_dpo_step("2.5");
    assert!(
        nll > 0.0 && (nll - nll_again).abs() < 1e-9,
        "{nll} {nll_again}"
    );
    assert!(
        (with_nll - plain - 2.5 * nll).abs() < 1e-5,
        "loss {with_nll} should be {plain} + 2.5 x {nll}"
    );
}

/// ConfPO trains on a strict subset of the response tokens (those below the mean probability),
/// with and without a reference: the mean weight of a response token lies strictly between
/// 0 and DPO's 1 (ConfPO on DPO), and the SimPO form's weights average to 1/|S| per response.
#[test]
fn confpo_weighs_a_subset_of_the_response_tokens() {
    let chosen_weight = |method: &str| {
        let out = ScratchFolder::empty(&format!("confpo-{method}"));
        run_ok(small_run(&out.0).args(["--steps", "2", "--method", method, "--eval-prompts", "0"]));
        let records = metrics(&out.0);
        let dpo: Vec<&Value> = records.iter().filter(|r| r["phase"] == "dpo").collect();
        assert_eq!(dpo.len(), 2, "{method}");
        for record in &dpo {
            assert!(
                record["loss"].as_f64().is_some_and(f64::is_finite),
                "{record}"
            );
        }
        dpo[0]["otpref/weights_chosen_mean"].as_f64().unwrap()
    };
    assert!((chosen_weight("dpo") - 1.0).abs() < 1e-6);
    let selected = chosen_weight("confpo-dpo");
    assert!(selected > 0.05 && selected < 0.95, "{selected}");
    let normalized = chosen_weight("confpo");
    assert!(
        normalized > 0.0 && normalized < selected,
        "{normalized} vs {selected}"
    );
}

/// The built-in task's pairs as JSON lines with each response's token weights set by
/// `weights(response)` (the built-in tokenizer: one token per character, then EOS).
fn weighted_builtin_data(folder: &Path, weights: impl Fn(&str) -> Vec<f64>) -> String {
    std::fs::create_dir_all(folder).unwrap();
    let plain = folder.join("builtin.jsonl");
    run_ok(trainer().args([
        "--write-builtin",
        plain.to_str().unwrap(),
        "--builtin-train-pairs",
        "64",
    ]));
    let mut lines = String::new();
    for line in std::fs::read_to_string(&plain).unwrap().lines().take(64) {
        let mut pair: Value = serde_json::from_str(line).unwrap();
        for name in ["chosen", "rejected"] {
            let response = pair[name].as_str().unwrap().to_string();
            pair[format!("{name}_weights")] = weights(&response).into();
        }
        lines += &format!("{pair}\n");
    }
    let data = folder.join("weighted.jsonl");
    std::fs::write(&data, lines).unwrap();
    data.to_str().unwrap().to_string()
}

/// `--method given` trains on the data's token weights: weight 2 on every response token at
/// β is DPO at 2β (the loss is −log σ(β Σ w_i Δ_i), a closed form), step for step.
#[test]
fn given_token_weights_of_two_are_dpo_at_twice_beta() {
    let out = ScratchFolder::empty("dpo-given");
    let data = weighted_builtin_data(&out.0, |r| vec![2.0; r.chars().count() + 1]);
    let losses = |method: &str, beta: &str| -> Vec<f64> {
        let run = out.0.join(format!("{method}-{beta}"));
        let mut command = trainer();
        command.args(common::tiny_builtin(&run, 64, 16));
        command.args([
            "--data",
            &data,
            "--eval-data",
            &data,
            "--method",
            method,
            "--beta",
            beta,
            "--sft-steps",
            "2",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--log-every",
            "1",
            "--eval-every",
            "0",
            "--save-every",
            "0",
            "--eval-prompts",
            "0",
            "--lr",
            "1e-3",
        ]);
        run_ok(&mut command);
        metrics(&run)
            .iter()
            .filter(|r| r["phase"] == "dpo")
            .map(|r| r["loss"].as_f64().unwrap())
            .collect()
    };
    let given = losses("given", "0.1");
    let dpo = losses("dpo", "0.2");
    assert_eq!(given.len(), 3);
    for (g, d) in given.iter().zip(&dpo) {
        assert!((g - d).abs() < 1e-5, "given {given:?} vs dpo {dpo:?}");
    }
    // Not trivially equal: the runs moved away from ln 2.
    assert!(
        given
            .iter()
            .any(|l| (l - std::f64::consts::LN_2).abs() > 1e-4),
        "{given:?}"
    );
}

/// `--method given` refuses, before training and naming the line, data without token
/// weights, weights that do not match the response's tokens, and negative weights.
#[test]
fn given_token_weights_are_checked_before_training() {
    let out = ScratchFolder::empty("dpo-given-bad");
    let short = weighted_builtin_data(&out.0.join("short"), |r| vec![1.0; r.chars().count()]);
    let stderr = failure(
        env!("CARGO_BIN_EXE_dpo_trainer"),
        &["--method", "given", "--data", &short],
    );
    assert!(
        stderr.contains("weighted.jsonl line 1: \"chosen_weights\" has")
            && stderr.contains("(the end-of-sequence token included)"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let negative = weighted_builtin_data(&out.0.join("negative"), |r| {
        let mut w = vec![1.0; r.chars().count() + 1];
        w[0] = -1.0;
        w
    });
    let stderr = failure(
        env!("CARGO_BIN_EXE_dpo_trainer"),
        &["--method", "given", "--data", &negative],
    );
    assert!(
        stderr.contains("line 1: \"chosen_weights\" entry 0 is -1.0: token weights must be finite numbers, 0 or more"),
        "{stderr}"
    );
    let stderr = failure(env!("CARGO_BIN_EXE_dpo_trainer"), &["--method", "given"]);
    assert!(
        stderr.contains("--method given reads each pair's \"chosen_weights\"")
            && stderr.contains("built-in task (train) line 1 has no \"chosen_weights\""),
        "{stderr}"
    );
    let stderr = failure(
        env!("CARGO_BIN_EXE_dpo_trainer"),
        &["--method", "given", "--pairs-from-policy", "4"],
    );
    assert!(
        stderr.contains("--pairs-from-policy samples pairs that have none"),
        "{stderr}"
    );
}

#[test]
fn bad_input_is_a_one_line_error_before_training() {
    let cases: [(&[&str], &str); 9] = [
        (
            &["--method", "magic"],
            "invalid value 'magic' for '--method",
        ),
        (&["--batch-size", "0"], "--batch-size must be at least 1"),
        (&["--steps", "-3"], "'--steps"),
        (
            &["--model", "/no/such/model"],
            "--model /no/such/model: no such folder",
        ),
        (
            &["--data", "/no/such.jsonl"],
            "--data /no/such.jsonl: no such file",
        ),
        (
            &["--max-prompt-length", "600"],
            "--max-prompt-length (600) must be below --max-length (512)",
        ),
        (&["--lr", "-1"], "--lr must be a positive number"),
        (
            &["--label-smoothing", "0.7"],
            "--label-smoothing must be in [0, 0.5)",
        ),
        (&["--rpo-alpha", "-1"], "--rpo-alpha must be a number >= 0"),
    ];
    for (args, expected) in cases {
        let stderr = failure(env!("CARGO_BIN_EXE_dpo_trainer"), args);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    #[cfg(not(feature = "cuda"))]
    assert!(
        failure(env!("CARGO_BIN_EXE_dpo_trainer"), &["--device", "cuda"])
            .contains("built without CUDA")
    );
}

#[test]
fn a_malformed_data_line_is_named_before_training() {
    let out = ScratchFolder::empty("dpo-bad-data");
    std::fs::create_dir_all(&out.0).unwrap();
    let data = out.0.join("bad.jsonl");
    std::fs::write(
        &data,
        "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\n{\"prompt\": \"a\"}\n",
    )
    .unwrap();
    let stderr = failure(
        env!("CARGO_BIN_EXE_dpo_trainer"),
        &["--data", data.to_str().unwrap()],
    );
    assert!(
        stderr.contains("bad.jsonl: line 2: missing \"chosen\""),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn config_file_with_command_line_overrides() {
    let out = ScratchFolder::empty("dpo-config");
    std::fs::create_dir_all(&out.0).unwrap();
    let path = out.0.join("config.json");
    std::fs::write(&path, r#"{"beta": 0.25, "method": "simpo", "steps": 2}"#).unwrap();
    // Bad keys are refused.
    let bad = out.0.join("bad.json");
    std::fs::write(&bad, r#"{"betta": 0.25}"#).unwrap();
    assert!(failure(
        env!("CARGO_BIN_EXE_dpo_trainer"),
        &["--config", bad.to_str().unwrap()]
    )
    .contains("unknown setting \"betta\""));
    let mut command = small_run(&out.0.join("run"));
    command.args(["--config", path.to_str().unwrap(), "--method", "dpo"]);
    run_ok(&mut command);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(out.0.join("run/config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["beta"], 0.25); // from the file
    assert_eq!(saved["method"], "dpo"); // the command line wins
    assert_eq!(saved["steps"], 6); // small_run's flag wins over the file
}

#[test]
fn write_builtin_writes_the_task_as_jsonl() {
    let out = ScratchFolder::empty("dpo-write-builtin");
    std::fs::create_dir_all(&out.0).unwrap();
    let path = out.0.join("task.jsonl");
    run_ok(trainer().args([
        "--write-builtin",
        path.to_str().unwrap(),
        "--builtin-train-pairs",
        "5",
    ]));
    let data = otpref_trainers::data::read_jsonl(&path).unwrap();
    assert_eq!(data.len(), 5);
}
