//! Data-parallel training on burn's collective, against single-device runs: two replicas
//! (threads) at batch b end with the parameters of one device at batch 2b, for the DPO
//! trainer (DPO, OTPO) and the reward trainer (Bradley-Terry, APLOT with its margins over the
//! gathered global batch); APLOT over each replica's half alone would differ; a resumed
//! two-replica run ends where an uninterrupted one does, also after a SIGTERM; two processes
//! (nodes) on the loopback address, meeting at burn's global orchestrator, train what one
//! process does, and resume exactly; bad flags fail first.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{model_floats, run_ok, wait_for_records, ScratchFolder};

const DPO: &str = env!("CARGO_BIN_EXE_dpo_trainer");
const REWARD: &str = env!("CARGO_BIN_EXE_reward_trainer");

/// A small built-in run of `program` at `--batch-size batch` with `extra` flags.
fn tiny(program: &str, output: &Path, batch: usize, extra: &[&str]) -> Command {
    let mut command = Command::new(program);
    command.args(common::tiny_builtin(output, 32, 8));
    command.args([
        "--log-every",
        "1",
        "--eval-every",
        "0",
        "--steps",
        "3",
        "--batch-size",
        &batch.to_string(),
    ]);
    if program == DPO {
        // No warm-up (tested on its own below) and no RPO term (a token mean per replica, as
        // it is per micro-batch with gradient accumulation); the DPO losses are means over
        // pairs.
        command.args([
            "--sft-steps",
            "0",
            "--rpo-alpha",
            "0",
            "--eval-prompts",
            "0",
        ]);
        command.args(["--lr", "1e-3"]);
    }
    command.args(extra);
    command
}

/// The largest difference between two saved models' parameters.
fn largest_difference(a: &Path, b: &Path) -> f32 {
    let (a, b) = (model_floats(a), model_floats(b));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f32;
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other);
        for (p, q) in x.iter().zip(y) {
            assert!(p.is_finite() && q.is_finite(), "{name}");
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

/// The largest parameter change a run made (how far it moved from `start`).
fn moved(start: &Path, end: &Path) -> f32 {
    largest_difference(start, end)
}

const CASES: [(&str, &[&str]); 4] = [
    (DPO, &["--method", "dpo"]),
    (DPO, &["--method", "otpo"]),
    (REWARD, &["--loss", "bt"]),
    (REWARD, &["--loss", "aplot"]),
];

#[test]
fn two_replicas_at_batch_b_train_what_one_device_does_at_batch_2b() {
    for (program, method) in CASES {
        let name = format!(
            "{}-{}",
            if program == DPO { "dpo" } else { "rm" },
            method[1]
        );
        let one = ScratchFolder::empty(&format!("dp-one-{name}"));
        run_ok(&mut tiny(program, &one.0, 4, method));
        let two = ScratchFolder::empty(&format!("dp-two-{name}"));
        let stdout = run_ok(tiny(program, &two.0, 2, method).args(["--devices", "2"])).stdout;
        let difference = largest_difference(&one.0, &two.0);
        assert!(
            difference <= 1e-5,
            "{name}: parameters differ by {difference}"
        );
        // The replicas' run trained: its parameters moved from the untrained model's.
        let untrained = ScratchFolder::empty(&format!("dp-untrained-{name}"));
        run_ok(tiny(program, &untrained.0, 4, method).args(["--lr", "1e-12"]));
        assert!(moved(&untrained.0, &two.0) > 1e-3, "{name} did not train");
        // The main replica alone prints: one summary.
        let stdout = String::from_utf8_lossy(&stdout);
        assert_eq!(stdout.matches("summary").count(), 1, "{name}: {stdout}");
    }
}

/// The SFT warm-up's loss is the mean over every response token of a step: two replicas at
/// batch b, and one device at b with `--grad-accum 2`, train what one device does at 2b,
/// though the halves hold different numbers of tokens (the built-in answers vary in length).
#[test]
fn sft_token_means_span_replicas_and_micro_batches() {
    // `tiny`'s DPO run (no RPO term) with an SFT warm-up and one DPO step; later flags win.
    let sft = |output: &Path, batch: usize, sft_lr: &str, extra: &[&str]| {
        let warm_up = ["--sft-steps", "4", "--sft-lr", sft_lr, "--steps", "1"];
        let mut command = tiny(DPO, output, batch, &warm_up);
        command.args(extra);
        command
    };
    let one = ScratchFolder::empty("dp-sft-one");
    run_ok(&mut sft(&one.0, 4, "1e-2", &[]));
    let two = ScratchFolder::empty("dp-sft-two");
    run_ok(&mut sft(&two.0, 2, "1e-2", &["--devices", "2"]));
    let accumulated = ScratchFolder::empty("dp-sft-accumulated");
    run_ok(&mut sft(&accumulated.0, 2, "1e-2", &["--grad-accum", "2"]));
    let replicas = largest_difference(&one.0, &two.0);
    let micro_batches = largest_difference(&one.0, &accumulated.0);
    assert!(replicas <= 1e-5, "the replicas differ by {replicas}");
    assert!(
        micro_batches <= 1e-5,
        "the micro-batches differ by {micro_batches}"
    );
    let untrained = ScratchFolder::empty("dp-sft-untrained");
    run_ok(&mut sft(&untrained.0, 4, "1e-12", &["--lr", "1e-12"]));
    assert!(moved(&untrained.0, &one.0) > 1e-3, "SFT did not train");
}

#[test]
fn aplot_over_each_replicas_half_alone_would_differ() {
    // One device at batch 2 with two micro-batches sees the same 4 pairs per step as two
    // replicas at batch 2, but solves APLOT's OT over each half on its own: what replicas
    // that did not gather their rows would compute. Long enough and fast enough for the
    // representations, and so the margins, to differ between pairs.
    let aplot = ["--loss", "aplot", "--steps", "20", "--lr", "1e-2"];
    let global = ScratchFolder::empty("dp-aplot-global");
    run_ok(&mut tiny(REWARD, &global.0, 4, &aplot));
    let replicas = ScratchFolder::empty("dp-aplot-replicas");
    run_ok(tiny(REWARD, &replicas.0, 2, &aplot).args(["--devices", "2"]));
    let halves = ScratchFolder::empty("dp-aplot-halves");
    run_ok(tiny(REWARD, &halves.0, 2, &aplot).args(["--grad-accum", "2"]));
    let gathered = largest_difference(&global.0, &replicas.0);
    let per_half = largest_difference(&global.0, &halves.0);
    assert!(gathered <= 5e-5, "the replicas differ by {gathered}");
    assert!(
        per_half >= 1e-3 && per_half >= 100.0 * gathered,
        "per-half margins should change the run: {per_half} against {gathered}"
    );
    // Bradley-Terry has no batch-level term: the same comparison agrees.
    let bt = ["--loss", "bt"];
    let bt_global = ScratchFolder::empty("dp-bt-global");
    run_ok(&mut tiny(REWARD, &bt_global.0, 4, &bt));
    let bt_halves = ScratchFolder::empty("dp-bt-halves");
    run_ok(tiny(REWARD, &bt_halves.0, 2, &bt).args(["--grad-accum", "2"]));
    assert!(largest_difference(&bt_global.0, &bt_halves.0) <= 1e-5);
}

#[test]
fn a_resumed_two_replica_run_ends_where_an_uninterrupted_one_does() {
    for (program, method) in [CASES[1], CASES[3]] {
        let args = [
            method,
            &["--devices", "2", "--steps", "4", "--save-every", "2"],
        ]
        .concat();
        let straight = ScratchFolder::empty(&format!("dp-straight-{}", method[1]));
        run_ok(&mut tiny(program, &straight.0, 2, &args));
        let resumed = ScratchFolder::empty(&format!("dp-resumed-{}", method[1]));
        run_ok(&mut tiny(program, &resumed.0, 2, &args));
        std::fs::remove_dir_all(resumed.0.join("checkpoints/step-00000004")).unwrap();
        std::fs::remove_dir_all(resumed.0.join("model")).unwrap();
        let stdout = run_ok(tiny(program, &resumed.0, 2, &args).arg("--resume")).stdout;
        assert!(String::from_utf8_lossy(&stdout).contains("resumed from"));
        let difference = largest_difference(&straight.0, &resumed.0);
        assert!(
            difference == 0.0,
            "{}: resumed differs by {difference}",
            method[1]
        );
    }
}

#[test]
fn a_sigterm_stops_both_replicas_at_one_step_with_a_checkpoint_that_resumes_exactly() {
    let args = [
        "--loss",
        "aplot",
        "--devices",
        "2",
        "--steps",
        "300",
        "--save-every",
        "0",
    ];
    let straight = ScratchFolder::empty("dp-term-straight");
    run_ok(&mut tiny(REWARD, &straight.0, 2, &args));
    let stopped = ScratchFolder::empty("dp-term-stopped");
    let child = tiny(REWARD, &stopped.0, 2, &args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_records(&stopped.0, 6);
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        stdout.matches("SIGTERM: checkpoint saved").count(),
        1,
        "{stdout}"
    );
    assert!(!stopped.0.join("model").exists());
    let resumed = run_ok(tiny(REWARD, &stopped.0, 2, &args).arg("--resume")).stdout;
    assert!(String::from_utf8_lossy(&resumed).contains("resumed from"));
    let difference = largest_difference(&straight.0, &stopped.0);
    assert!(difference == 0.0, "resumed differs by {difference}");
}

#[test]
fn a_sharded_optimizer_trains_what_an_unsharded_one_does_and_saves_the_whole_state() {
    let lora: &[&str] = &["--method", "dpo", "--lora-rank", "4"];
    for (program, method) in [CASES[1], CASES[3], (DPO, lora)] {
        let name = format!("{}{}", method[1], method.len());
        let args = [
            method,
            &["--devices", "2", "--steps", "4", "--save-every", "2"],
        ]
        .concat();
        let plain = ScratchFolder::empty(&format!("zero-plain-{name}"));
        run_ok(&mut tiny(program, &plain.0, 2, &args));
        let sharded_args = [&args[..], &["--shard-optimizer"]].concat();
        let sharded = ScratchFolder::empty(&format!("zero-sharded-{name}"));
        let stdout = run_ok(&mut tiny(program, &sharded.0, 2, &sharded_args)).stdout;
        let difference = largest_difference(&plain.0, &sharded.0);
        assert!(
            difference <= 1e-5,
            "{name}: sharded differs by {difference}"
        );
        // The main replica keeps about half of the state: "keeps K of T trained values".
        let stdout = String::from_utf8_lossy(&stdout);
        let counts: Vec<f64> = stdout
            .split("replica 0 keeps ")
            .nth(1)
            .and_then(|rest| rest.split(" trained values").next())
            .unwrap_or_else(|| panic!("{name}: no sharding line in {stdout}"))
            .split(" of ")
            .map(|n| n.parse().unwrap())
            .collect();
        let share = counts[0] / counts[1];
        assert!(
            (0.3..=0.7).contains(&share),
            "{name}: keeps {share} of the state"
        );
        // The checkpoint holds the whole state: resumed without sharding from step 2, the
        // run ends where the unsharded one does (a missing moment would change the steps).
        std::fs::remove_dir_all(sharded.0.join("checkpoints/step-00000004")).unwrap();
        std::fs::remove_dir_all(sharded.0.join("model")).unwrap();
        run_ok(tiny(program, &sharded.0, 2, &args).arg("--resume"));
        let difference = largest_difference(&plain.0, &sharded.0);
        assert!(
            difference <= 1e-5,
            "{name}: resumed unsharded differs by {difference}"
        );
        // And a sharded run resumes its own checkpoint.
        std::fs::remove_dir_all(sharded.0.join("checkpoints/step-00000004")).unwrap();
        std::fs::remove_dir_all(sharded.0.join("model")).unwrap();
        run_ok(tiny(program, &sharded.0, 2, &sharded_args).arg("--resume"));
        let difference = largest_difference(&plain.0, &sharded.0);
        assert!(
            difference <= 1e-5,
            "{name}: resumed sharded differs by {difference}"
        );
    }
    // Timed checkpoints, due on each replica's own clock: all agree on when to gather and
    // save (a replica left out of the gather would wait forever), and nothing changes.
    let args = [
        CASES[3].1,
        &["--devices", "2", "--steps", "4", "--shard-optimizer"],
    ]
    .concat();
    let plain = ScratchFolder::empty("zero-untimed");
    run_ok(&mut tiny(REWARD, &plain.0, 2, &args));
    let timed = ScratchFolder::empty("zero-timed");
    let child = tiny(REWARD, &timed.0, 2, &args)
        .args([
            "--save-every-minutes",
            "0.00001",
            "--keep-checkpoints",
            "10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finished_within(child, Duration::from_secs(120));
    let saved = std::fs::read_dir(timed.0.join("checkpoints"))
        .unwrap()
        .count();
    assert_eq!(saved, 4, "a checkpoint at every step");
    assert!(largest_difference(&plain.0, &timed.0) == 0.0);
}

/// A port of the loopback address that nothing listens on now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// `child`'s output, or a failed test (and the child killed) after `limit`.
fn finished_within(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "no end after {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "a node failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Two processes of `program` on the loopback address, nodes 0 and 1 of one run meeting at
/// burn's global orchestrator, each at `--batch-size 2` with `flags`; both write to `output`,
/// as nodes on a shared file system do (node 0 alone saves). Their outputs, in rank order.
fn two_nodes(program: &str, output: &Path, flags: &[&str]) -> [Output; 2] {
    let orchestrator = format!("127.0.0.1:{}", free_port());
    let node = |rank: usize| {
        let address = format!("127.0.0.1:{}", free_port());
        tiny(program, output, 2, flags)
            .args(["--nodes", "2", "--orchestrator", &orchestrator])
            .args(["--node-rank", &rank.to_string(), "--node-address", &address])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (first, second) = (node(0), node(1));
    let limit = Duration::from_secs(120);
    [
        finished_within(first, limit),
        finished_within(second, limit),
    ]
}

#[test]
fn two_nodes_on_the_loopback_address_train_what_one_process_does() {
    for (program, method) in [CASES[0], CASES[3]] {
        let name = method[1];
        let flags = [method, &["--steps", "2"]].concat();
        let one = ScratchFolder::empty(&format!("nodes-one-{name}"));
        run_ok(&mut tiny(program, &one.0, 4, &flags));
        let nodes = ScratchFolder::empty(&format!("nodes-two-{name}"));
        let [first, second] = two_nodes(program, &nodes.0, &flags);
        let difference = largest_difference(&one.0, &nodes.0);
        assert!(difference <= 1e-5, "{name}: nodes differ by {difference}");
        // Node 0 speaks for the run; node 1 prints no summary.
        let summaries = |output: &Output| {
            String::from_utf8_lossy(&output.stdout)
                .matches("summary")
                .count()
        };
        assert_eq!((summaries(&first), summaries(&second)), (1, 0), "{name}");
    }
}

#[test]
fn a_resumed_two_node_run_ends_where_an_uninterrupted_one_does() {
    let flags = ["--loss", "aplot", "--steps", "4", "--save-every", "2"];
    let straight = ScratchFolder::empty("nodes-straight");
    two_nodes(REWARD, &straight.0, &flags);
    let resumed = ScratchFolder::empty("nodes-resumed");
    two_nodes(REWARD, &resumed.0, &flags);
    std::fs::remove_dir_all(resumed.0.join("checkpoints/step-00000004")).unwrap();
    std::fs::remove_dir_all(resumed.0.join("model")).unwrap();
    let [first, _] = two_nodes(REWARD, &resumed.0, &[&flags[..], &["--resume"]].concat());
    assert!(String::from_utf8_lossy(&first.stdout).contains("resumed from"));
    let difference = largest_difference(&straight.0, &resumed.0);
    assert!(difference == 0.0, "resumed differs by {difference}");
}

#[test]
fn data_parallel_flags_are_checked_before_training() {
    let cases: [(&[&str], &str); 7] = [
        (&["--devices", "0"], "--devices must be at least 1"),
        (&["--devices", "two"], "--devices takes a count"),
        (&["--devices", "0,1"], "--devices on cpu is a count"),
        (
            &["--nodes", "2"],
            "--nodes 2 needs --orchestrator HOST:PORT",
        ),
        (
            &["--nodes", "2", "--node-rank", "2"],
            "--node-rank must be below --nodes (2), got 2",
        ),
        (
            &["--nodes", "2", "--orchestrator", "10.0.0.1"],
            "--orchestrator takes HOST:PORT",
        ),
        (&["--node-rank", "1"], "go with --nodes 2 or more"),
    ];
    // A --node-address whose port is taken is named before anything starts.
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let taken = format!("127.0.0.1:{}", busy.local_addr().unwrap().port());
    let orchestrator = format!("127.0.0.1:{}", free_port());
    let in_use: &[&str] = &[
        "--nodes",
        "2",
        "--node-rank",
        "1",
        "--orchestrator",
        &orchestrator,
        "--node-address",
        &taken,
    ];
    let cases = [
        &cases[..],
        &[(in_use, "--node-address: cannot listen on port")],
    ]
    .concat();
    for (flags, expected) in cases {
        let out = ScratchFolder::empty("dp-flags");
        let output = tiny(REWARD, &out.0, 2, flags).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{flags:?}: {stderr}");
        assert!(
            !out.0.join("config.json").exists(),
            "{flags:?} started training"
        );
    }
}
