//! burn-flex's `matmul` beside the `gemm` crate called directly, at the step-speed workload's
//! shapes (`docs/benchmarks.md`, "an Intel Xeon with AVX-512"; torch's anchor is
//! `scripts/bench/matmul.py`). Set `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=4000000000` to
//! time it as the trainer programs allocate.
//!
//!     cargo run --release -p otpref-trainers --example matmul_speed

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};

const SHAPES: [(usize, usize, usize); 6] = [
    (336, 576, 1536),
    (336, 1536, 576),
    (336, 576, 576),
    (336, 576, 192),
    (576, 336, 1536),
    (1536, 336, 576),
];
const CALLS: usize = 50;

/// Seconds per call of `f`, after 5 warm-up calls.
fn time(mut f: impl FnMut()) -> f64 {
    (0..5).for_each(|_| f());
    let started = Instant::now();
    (0..CALLS).for_each(|_| f());
    started.elapsed().as_secs_f64() / CALLS as f64
}

/// `[m, k] × [k, n]` with the `gemm` crate on two threads, row-major, into `out`.
fn gemm_direct(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], out: &mut [f32]) {
    // SAFETY: the slices hold m·k, k·n and m·n elements, row-major with the strides given.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(2),
        )
    }
}

fn main() {
    let device = Default::default();
    for (m, k, n) in SHAPES {
        let gflops = |seconds: f64| 2.0 * (m * k * n) as f64 / seconds / 1e9;
        let a = Tensor::<Flex, 2>::random([m, k], Distribution::Default, &device);
        let b = Tensor::<Flex, 2>::random([k, n], Distribution::Default, &device);
        let flex = time(|| drop(a.clone().matmul(b.clone())));
        let (a, b) = (vec![0.5f32; m * k], vec![0.25f32; k * n]);
        let mut out = vec![0.0f32; m * n];
        let direct = time(|| gemm_direct(m, k, n, &a, &b, &mut out));
        println!(
            "{m} x {k} x {n}: burn-flex {:.1} GFLOP/s, gemm {:.1} GFLOP/s",
            gflops(flex),
            gflops(direct)
        );
    }
}
