//! The GPU benchmarks of `docs/benchmarks.md` (run by `scripts/gpu/run.sh` beside their POT
//! anchors, `scripts/gpu/anchors.py`): one JSON line per workload on stdout.
//!
//! - balanced Sinkhorn, batch 128, n = m = 1024, ε = 0.05, costs uniform in [0, 1], tolerance
//!   1e-6: time per solve and per iteration, and the bytes per iteration (2·batch·n·m·4, the
//!   cost-sized kernel read twice) over that time;
//! - OTPO token weights, batch 64, 512 tokens per response, hidden 2048 and 4096, ε1 = 0.1,
//!   ε2 = 0.2, the released cost normalisation.
//!
//! `cargo run --release --features cuda --example gpu_bench` on a GPU; `--cpu` (or a build
//! without `cuda`) runs on the CPU backend, and `--small` divides every size by 8 (the script's
//! dry run on a CPU machine).

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use otpref::{
    otpo_token_weights, sinkhorn, CostNormalization, GradientMode, OtBackend, OtpoConfig,
    SinkhornConfig,
};

/// Timed repetitions after one untimed warm-up (which also runs autotune).
const REPEATS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn balanced<B: OtBackend>(scale: usize, device: &B::Device) -> String {
    let (batch, n) = (128 / scale, 1024 / scale);
    B::seed(device, 0);
    let cost = Tensor::<B, 3>::random([batch, n, n], Distribution::Uniform(0.0, 1.0), device);
    let masses = Tensor::<B, 2>::ones([batch, n], device).div_scalar(n as f64);
    let config = SinkhornConfig::new(0.05)
        .with_tolerance(1e-6)
        .with_gradient(GradientMode::Detach);
    let solve = || {
        let started = Instant::now();
        let transport =
            sinkhorn(cost.clone(), masses.clone(), masses.clone(), &config).expect("valid inputs");
        // Reading a value back waits for all device work.
        let _ = transport.plan.sum().into_data();
        let iterations = transport.iterations.iter().copied().max().unwrap_or(0);
        (started.elapsed().as_secs_f64(), iterations)
    };
    solve();
    let runs: Vec<(f64, usize)> = (0..REPEATS).map(|_| solve()).collect();
    let iterations = runs[0].1;
    let seconds = median(runs.iter().map(|r| r.0).collect());
    let per_iteration = seconds / iterations.max(1) as f64;
    let bytes = 2.0 * (batch * n * n * 4) as f64;
    format!(
        r#"{{"workload": "balanced", "batch": {batch}, "n": {n}, "epsilon": 0.05, "tolerance": 1e-6, "ms_per_solve": {:.3}, "iterations": {iterations}, "ms_per_iteration": {:.4}, "bytes_per_iteration": {bytes}, "gb_per_s": {:.1}}}"#,
        1e3 * seconds,
        1e3 * per_iteration,
        bytes / per_iteration / 1e9
    )
}

fn otpo<B: OtBackend>(scale: usize, hidden: usize, device: &B::Device) -> String {
    let (batch, tokens, hidden) = (64 / scale, 512 / scale, hidden / scale);
    B::seed(device, 0);
    let states = || {
        Tensor::<B, 3>::random(
            [batch, tokens, hidden],
            Distribution::Normal(0.0, 1.0),
            device,
        )
    };
    let (chosen, rejected) = (states(), states());
    let mask = Tensor::<B, 2>::ones([batch, tokens], device);
    let config = OtpoConfig::new()
        .with_epsilon(0.1)
        .with_marginal_penalty(0.2)
        .with_normalization(CostNormalization::Released);
    let weights = || {
        let started = Instant::now();
        let w = otpo_token_weights(
            chosen.clone(),
            rejected.clone(),
            mask.clone(),
            mask.clone(),
            &config,
        )
        .expect("valid inputs");
        let _ = w.chosen.sum().into_data();
        started.elapsed().as_secs_f64()
    };
    weights();
    let seconds = median((0..REPEATS).map(|_| weights()).collect());
    format!(
        r#"{{"workload": "otpo_weights", "batch": {batch}, "tokens": {tokens}, "hidden": {hidden}, "ms_per_call": {:.3}}}"#,
        1e3 * seconds
    )
}

fn run<B: OtBackend>(scale: usize) {
    let device = B::Device::default();
    println!("{}", balanced::<B>(scale, &device));
    for hidden in [2048, 4096] {
        println!("{}", otpo::<B>(scale, hidden, &device));
    }
}

fn main() {
    let flag = |name: &str| std::env::args().any(|a| a == name);
    let scale = if flag("--small") { 8 } else { 1 };
    #[cfg(feature = "cuda")]
    if !flag("--cpu") {
        return run::<burn::backend::Cuda>(scale);
    }
    run::<burn::backend::Flex>(scale);
}
