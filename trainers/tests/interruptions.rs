//! Both programs through the one training loop: a resumed run ends where an uninterrupted one
//! does, Ctrl-C (SIGINT) and a scheduler's SIGTERM save a checkpoint that resumes exactly (with
//! exit codes 130 and 143), a SIGKILL during a save leaves a checkpoint to resume from, and
//! `--resume` refuses what it cannot continue.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{metrics, model_floats, run_ok, wait_for_records, ScratchFolder};

#[derive(Clone, Copy, Debug)]
enum Program {
    Dpo,
    Reward,
}

const PROGRAMS: [Program; 2] = [Program::Dpo, Program::Reward];

impl Program {
    /// A small built-in run of `steps` steps (DPO: 4 of them SFT).
    fn run(self, output: &Path, steps: usize) -> Command {
        let (binary, phase_flags): (&str, Vec<String>) = match self {
            Program::Dpo => (
                env!("CARGO_BIN_EXE_dpo_trainer"),
                vec![
                    "--sft-steps".into(),
                    "4".into(),
                    "--steps".into(),
                    (steps - 4).to_string(),
                    "--eval-prompts".into(),
                    "2".into(),
                    "--max-new-tokens".into(),
                    "4".into(),
                ],
            ),
            Program::Reward => (
                env!("CARGO_BIN_EXE_reward_trainer"),
                vec!["--steps".into(), steps.to_string()],
            ),
        };
        let mut command = Command::new(binary);
        command.args(common::tiny_builtin(output, 64, 16));
        command.args(["--batch-size", "4", "--log-every", "1", "--eval-every", "0"]);
        command.args(phase_flags);
        command
    }
}

/// The two runs' saved models are the same to the bit.
fn assert_same_models(a: &Path, b: &Path, program: Program) {
    let (a, b) = (model_floats(a), model_floats(b));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            assert_eq!(p.to_bits(), q.to_bits(), "{program:?} {name}: {p} vs {q}");
        }
    }
}

/// Truncates `file` to half its length (a write cut short).
fn cut_in_half(file: &Path) {
    let len = std::fs::metadata(file).unwrap().len();
    let handle = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    handle.set_len(len / 2).unwrap();
}

fn checkpoint_steps(run: &Path) -> Vec<usize> {
    let mut steps: Vec<usize> = std::fs::read_dir(run.join("checkpoints"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_prefix("step-")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    steps.sort();
    steps
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    for program in PROGRAMS {
        let straight = ScratchFolder::empty(&format!("{program:?}-straight"));
        run_ok(&mut program.run(&straight.0, 10));
        let resumed = ScratchFolder::empty(&format!("{program:?}-resumed"));
        run_ok(program.run(&resumed.0, 10).args(["--save-every", "5"]));
        // The last checkpoint as a kill during its save leaves it: written into its
        // `.partial` folder, its model file cut short, never renamed. Resuming skips it.
        let last = resumed.0.join("checkpoints/step-00000010");
        let partial = resumed.0.join("checkpoints/step-00000010.partial");
        std::fs::rename(&last, &partial).unwrap();
        cut_in_half(&partial.join("model.mpk"));
        std::fs::remove_dir_all(resumed.0.join("model")).unwrap();
        let output = run_ok(program.run(&resumed.0, 10).arg("--resume"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("resumed from") && stdout.contains("step 5"),
            "{stdout}"
        );
        assert_same_models(&straight.0, &resumed.0, program);
        if let Program::Reward = program {
            // "before" is the starting model's accuracy, resumed or not.
            let summary = |dir: &Path| -> serde_json::Value {
                serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap())
                    .unwrap()
            };
            assert_eq!(
                summary(&straight.0)["before"],
                summary(&resumed.0)["before"]
            );
        }
        let steps: Vec<u64> = metrics(&resumed.0)
            .iter()
            .filter(|r| r.get("phase").is_some())
            .map(|r| r["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, (1..=10).collect::<Vec<_>>(), "{program:?}");
    }
}

/// Sends `signal` (`INT`, `TERM`) to a run of `program` once it has logged 6 steps; checks
/// that it saved one checkpoint, made no model and exited with 128 + the signal's number.
fn stop_with(program: Program, signal: &str, out: &Path, steps: usize) {
    let child = program
        .run(out, steps)
        .args(["--save-every", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_records(out, 6);
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("SIG{signal}: checkpoint saved"))
            && stdout.contains("resume with --resume"),
        "{program:?} {signal}: {stdout}"
    );
    let code = if signal == "INT" { 130 } else { 143 };
    assert_eq!(output.status.code(), Some(code), "{program:?} {signal}");
    let saved = checkpoint_steps(out);
    assert_eq!(saved.len(), 1, "{program:?} {signal}: {saved:?}");
    assert!(saved[0] >= 6 && saved[0] < steps, "{program:?}: {saved:?}");
    assert!(!out.join("model").exists(), "no model from a stopped run");
}

#[test]
fn ctrl_c_and_sigterm_save_a_checkpoint_that_resumes_exactly() {
    const STEPS: usize = 300;
    for program in PROGRAMS {
        let straight = ScratchFolder::empty(&format!("{program:?}-uninterrupted"));
        let finished = run_ok(program.run(&straight.0, STEPS).args(["--save-every", "0"]));
        assert_eq!(finished.status.code(), Some(0));
        // Ctrl-C at a terminal, then `--resume`; a scheduler's SIGTERM, then the requeued
        // job's `--resume auto`.
        for (signal, resume) in [("INT", "--resume"), ("TERM", "auto")] {
            let out = ScratchFolder::empty(&format!("{program:?}-sig{signal}"));
            stop_with(program, signal, &out.0, STEPS);
            let mut resumed = program.run(&out.0, STEPS);
            resumed.args(["--save-every", "0", "--resume"]);
            if resume == "auto" {
                resumed.arg("auto");
            }
            let output = run_ok(&mut resumed);
            assert!(String::from_utf8_lossy(&output.stdout).contains("resumed from"));
            assert_same_models(&straight.0, &out.0, program);
        }
    }
}

#[test]
fn resume_with_nothing_to_resume_fails_and_resume_auto_starts_fresh() {
    let out = ScratchFolder::empty("reward-nothing-to-resume");
    let output = Program::Reward
        .run(&out.0, 2)
        .arg("--resume")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: --resume: no checkpoint in") && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert!(
        !out.0.join("metrics.jsonl").exists(),
        "refused before training"
    );
    let output = run_ok(Program::Reward.run(&out.0, 2).args(["--resume", "auto"]));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("starting from step 0"), "{stdout}");
    assert_eq!(checkpoint_steps(&out.0), vec![2]);
}

#[test]
fn a_resume_that_changes_the_run_is_refused_and_one_that_changes_logging_is_not() {
    let out = ScratchFolder::empty("dpo-mismatched-resume");
    run_ok(&mut Program::Dpo.run(&out.0, 6));
    for (flag, value, message) in [
        ("--batch-size", "2", "--batch-size is 2 here but 4"),
        ("--method", "dpo", "--method is dpo here but otpo"),
        ("--seed", "7", "--seed is 7 here but 42"),
    ] {
        let output = Program::Dpo
            .run(&out.0, 6)
            .args(["--resume", flag, value])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(message) && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
    let output = run_ok(Program::Dpo.run(&out.0, 6).args([
        "--resume",
        "--log-every",
        "3",
        "--eval-prompts",
        "1",
    ]));
    assert!(String::from_utf8_lossy(&output.stdout).contains("resumed from"));
}

#[test]
fn a_checkpoint_is_saved_once_the_minutes_have_passed() {
    let out = ScratchFolder::empty("reward-timed-checkpoints");
    // 0.6 ms: every step ends after it; without the timer only the last step would be saved.
    run_ok(Program::Reward.run(&out.0, 4).args([
        "--save-every",
        "0",
        "--save-every-minutes",
        "0.00001",
        "--keep-checkpoints",
        "10",
    ]));
    assert_eq!(checkpoint_steps(&out.0), vec![1, 2, 3, 4]);
}

#[test]
fn a_kill_during_saving_leaves_a_checkpoint_to_resume_from() {
    for program in PROGRAMS {
        let out = ScratchFolder::empty(&format!("{program:?}-sigkill"));
        let mut command = program.run(&out.0, 400);
        // A checkpoint every step: the kill lands in or near a save.
        command.args(["--save-every", "1"]).stdout(Stdio::null());
        let mut child = command.spawn().unwrap();
        let checkpoints: PathBuf = out.0.join("checkpoints");
        let complete = |dir: &PathBuf| {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter(|e| !e.file_name().to_string_lossy().ends_with(".partial"))
                        .count()
                })
                .unwrap_or(0)
        };
        let started = Instant::now();
        while complete(&checkpoints) < 2 && started.elapsed().as_secs() < 120 {
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(complete(&checkpoints) >= 1, "{program:?}");
        let output = run_ok(
            program
                .run(&out.0, 400)
                .args(["--save-every", "0", "--resume"]),
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("resumed from"),
            "{program:?}"
        );
    }
}

#[test]
fn a_second_signal_stops_at_once_without_saving() {
    let out = ScratchFolder::empty("reward-second-signal");
    // A model wide enough that a step takes far longer than the gap between the two signals,
    // so the second lands while the first is waiting for the step to end.
    let child = Command::new(env!("CARGO_BIN_EXE_reward_trainer"))
        .args(["--output", out.0.to_str().unwrap()])
        .args(["--builtin-hidden", "256", "--builtin-layers", "4"])
        .args(["--builtin-train-pairs", "64", "--builtin-eval-pairs", "16"])
        .args(["--batch-size", "32", "--steps", "400", "--log-every", "1"])
        .args(["--eval-every", "0", "--save-every", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_records(&out.0, 1);
    let pid = child.id().to_string();
    let term = || {
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
    };
    term();
    std::thread::sleep(Duration::from_millis(100));
    term();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("checkpoint saved"), "{stdout}");
    assert!(checkpoint_steps(&out.0).is_empty(), "no checkpoint");
    assert!(!out.0.join("model").exists(), "no model");
}
