//! Peak heap memory of one forward + backward pass through 1000 Sinkhorn iterations, for the
//! unrolled and the implicit gradient (CPU backend, counted by a tracking global allocator).
//!
//! `cargo bench --bench gradient_memory`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::{Autodiff, Flex};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use otpref::{sinkhorn, GradientMode, SinkhornConfig};

struct Tracking;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Tracking = Tracking;

type B = Autodiff<Flex>;

fn peak_bytes(
    mode: GradientMode,
    matmul: bool,
    iterations: usize,
    batch: usize,
    size: usize,
) -> usize {
    let device = Default::default();
    <B as Backend>::seed(&device, 0);
    let cost = Tensor::<B, 3>::random(
        [batch, size, size],
        Distribution::Uniform(0.0, 1.0),
        &device,
    )
    .require_grad();
    let masses = Tensor::<B, 2>::ones([batch, size], &device).div_scalar(size as f64);
    // Tolerance 0: every problem runs exactly `iterations` iterations.
    let config = SinkhornConfig::new(0.05)
        .with_max_iters(iterations)
        .with_tolerance(0.0)
        .with_gradient(mode)
        .with_matmul_updates(matmul);
    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let transport = sinkhorn(cost.clone(), masses.clone(), masses, &config).unwrap();
    let loss = (transport.plan * cost.clone()).sum();
    let grads = loss.backward();
    let grad = cost.grad(&grads).unwrap();
    let values = grad.into_data().to_vec::<f32>().unwrap();
    let bad = values.iter().filter(|v| !v.is_finite()).count();
    assert!(
        bad == 0,
        "{mode:?} {iterations}: {bad} non-finite gradient entries"
    );
    PEAK.load(Ordering::Relaxed) - baseline
}

fn main() {
    let (batch, size) = (4, 128);
    let input_mib = (batch * size * size * 4) as f64 / (1 << 20) as f64;
    println!("batch {batch}, n = m = {size} (one [batch, n, m] f32 tensor = {input_mib:.2} MiB)");
    // Matrix-product updates keep only [batch, n] vectors per iteration; the full
    // log-sum-exp updates (small ε) keep [batch, n, m] tensors, so unrolling costs far more.
    for matmul in [true, false] {
        let updates = if matmul { "matmul" } else { "full LSE" };
        for iterations in [10, 100, 1000] {
            for mode in [GradientMode::Unrolled, GradientMode::Implicit] {
                let peak = peak_bytes(mode, matmul, iterations, batch, size);
                let peak = peak as f64 / (1 << 20) as f64;
                println!("{updates:>8} updates, {iterations:>5} iterations, {mode:?}: peak {peak:.1} MiB");
            }
        }
    }
}
