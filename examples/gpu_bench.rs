//! The GPU benchmarks of `docs/benchmarks.md` (run by `scripts/gpu/run.sh` beside their POT
//! anchors, `scripts/gpu/anchors.py`): one JSON line per workload on stdout.
//!
//! - balanced Sinkhorn, batch 128, n = m = 1024, ε = 0.05, costs uniform in [0, 1], tolerance
//!   1e-6: time per solve and per iteration, and the bytes per iteration (2·batch·n·m·4, the
//!   cost-sized kernel read twice) over that time; on the one-pass kernels (`fast_paths`, the
//!   default) and on the composed tensor ops;
//! - each of the backend's reductions alone on the same `[128, 1024, 1024]` matrix (a row and
//!   a column log-sum-exp, a row and a column weighted sum; one-pass kernels on CubeCL
//!   backends): time per call and bytes read (batch·n·m·4) per second;
//! - OTPO token weights, batch 64, 512 tokens per response, hidden 2048 and 4096, ε1 = 0.1,
//!   ε2 = 0.2, the released cost normalisation, on both paths.
//!
//! `cargo run --release --features cuda --example gpu_bench` on a GPU; `--cpu` (or a build
//! without `cuda`) runs on the CPU backend, `--wgpu` (a build with `wgpu`) on wgpu, and
//! `--small` divides every size by 8 (the script's dry run on a CPU machine).

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use otpref::{
    otpo_token_weights, sinkhorn, Axis, CostNormalization, GradientMode, OtBackend, OtpoConfig,
    Reduction, SinkhornConfig,
};

/// Timed repetitions after one untimed warm-up (which also runs autotune).
const REPEATS: usize = 5;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Which solver path a line measured.
fn path_name(fast_paths: bool) -> &'static str {
    if fast_paths {
        "fast"
    } else {
        "composed"
    }
}

fn balanced<B: OtBackend>(scale: usize, fast_paths: bool, device: &B::Device) -> String {
    let (batch, n) = (128 / scale, 1024 / scale);
    B::seed(device, 0);
    let cost = Tensor::<B, 3>::random([batch, n, n], Distribution::Uniform(0.0, 1.0), device);
    let masses = Tensor::<B, 2>::ones([batch, n], device).div_scalar(n as f64);
    let config = SinkhornConfig::new(0.05)
        .with_tolerance(1e-6)
        .with_gradient(GradientMode::Detach)
        .with_fast_paths(fast_paths);
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
        r#"{{"workload": "balanced", "path": "{}", "batch": {batch}, "n": {n}, "epsilon": 0.05, "tolerance": 1e-6, "ms_per_solve": {:.3}, "iterations": {iterations}, "ms_per_iteration": {:.4}, "bytes_per_iteration": {bytes}, "gb_per_s": {:.1}}}"#,
        path_name(fast_paths),
        1e3 * seconds,
        1e3 * per_iteration,
        bytes / per_iteration / 1e9
    )
}

/// Each one-pass reduction alone: `CALLS` calls between two reads back, so that launch and
/// transfer latencies do not count.
fn reductions<B: OtBackend>(scale: usize, device: &B::Device) -> Vec<String> {
    const CALLS: usize = 20;
    let (batch, n) = (128 / scale, 1024 / scale);
    B::seed(device, 1);
    let matrix = Tensor::<B, 3>::random([batch, n, n], Distribution::Uniform(-20.0, 0.0), device);
    let weights = Tensor::<B, 2>::random([batch, n], Distribution::Uniform(-1.0, 1.0), device);
    let mut lines = Vec::new();
    for (name, reduction) in [
        ("log_sum_exp", Reduction::LogSumExp),
        ("weighted_sum", Reduction::WeightedSum),
    ] {
        for axis in [Axis::Rows, Axis::Columns] {
            let call = || {
                let (m, w) = (matrix.clone(), weights.clone());
                let reduced = B::reduce_lines(m, w, axis, reduction);
                reduced.expect("operands that fit")
            };
            let timed = || {
                let started = Instant::now();
                let mut total = call().sum();
                for _ in 1..CALLS {
                    total = total + call().sum();
                }
                let _ = total.into_data();
                started.elapsed().as_secs_f64() / CALLS as f64
            };
            timed();
            let seconds = median((0..REPEATS).map(|_| timed()).collect());
            let bytes = (batch * n * n * 4) as f64;
            lines.push(format!(
                r#"{{"workload": "reduction", "reduction": "{name}", "axis": "{axis:?}", "batch": {batch}, "n": {n}, "ms_per_call": {:.4}, "gb_per_s": {:.1}}}"#,
                1e3 * seconds,
                bytes / seconds / 1e9
            ));
        }
    }
    lines
}

fn otpo<B: OtBackend>(scale: usize, hidden: usize, fast_paths: bool, device: &B::Device) -> String {
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
        .with_normalization(CostNormalization::Released)
        .with_fast_paths(fast_paths);
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
        r#"{{"workload": "otpo_weights", "path": "{}", "batch": {batch}, "tokens": {tokens}, "hidden": {hidden}, "ms_per_call": {:.3}}}"#,
        path_name(fast_paths),
        1e3 * seconds
    )
}

fn run<B: OtBackend>(scale: usize) {
    let device = B::Device::default();
    for fast_paths in [true, false] {
        println!("{}", balanced::<B>(scale, fast_paths, &device));
    }
    for line in reductions::<B>(scale, &device) {
        println!("{line}");
    }
    for hidden in [2048, 4096] {
        for fast_paths in [true, false] {
            println!("{}", otpo::<B>(scale, hidden, fast_paths, &device));
        }
    }
}

fn main() {
    let flag = |name: &str| std::env::args().any(|a| a == name);
    let scale = if flag("--small") { 8 } else { 1 };
    #[cfg(feature = "wgpu")]
    if flag("--wgpu") {
        return run::<burn::backend::Wgpu>(scale);
    }
    #[cfg(feature = "cuda")]
    if !flag("--cpu") {
        return run::<burn::backend::Cuda>(scale);
    }
    run::<burn::backend::Flex>(scale);
}
