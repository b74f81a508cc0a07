//! Forward Sinkhorn on the reference workload: batch 16, n = m = 256, ε = 0.05,
//! tolerance 1e-6, costs uniform in [0, 1], uniform masses. Compare with POT's
//! `ot.batch.solve_batch` via `benches/pot_sinkhorn.py` on the same machine.
//!
//! The `implicit_gradient` rows time a forward and backward through the implicit backward:
//! the gradient of `<P, W>` (fixed random `W`) with respect to the cost.
//!
//! Every solve gets a clone of one cost tensor (so the fused CPU solver copies it once before
//! building its kernel and the plan in the copy). `reference` rows run the composed solver
//! (`fast_paths = false`).
//!
//! `cargo bench --bench sinkhorn` (CPU) or `cargo bench --features cuda --bench sinkhorn` (adds
//! the CUDA backend).

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use otpref::{unbalanced_sinkhorn, GradientMode, OtBackend, SinkhornConfig, UnbalancedConfig};

const BATCH: usize = 16;
const SIZE: usize = 256;
const EPSILON: f64 = 0.05;

fn inputs<B: Backend>(device: &B::Device) -> (Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2>) {
    B::seed(device, 0);
    let cost = Tensor::random([BATCH, SIZE, SIZE], Distribution::Uniform(0.0, 1.0), device);
    let masses = Tensor::<B, 2>::ones([BATCH, SIZE], device).div_scalar(SIZE as f64);
    (cost, masses.clone(), masses)
}

fn bench_backend<B: OtBackend>(c: &mut Criterion, name: &str, device: &B::Device) {
    let (cost, a, b) = inputs::<B>(device);
    // `sinkhorn` is `unbalanced_sinkhorn` with both penalties infinite.
    let balanced = UnbalancedConfig::from(
        &SinkhornConfig::new(EPSILON)
            .with_tolerance(1e-6)
            .with_gradient(GradientMode::Detach),
    );
    let unbalanced = UnbalancedConfig::new(EPSILON, 1.0, 1.0)
        .with_tolerance(1e-6)
        .with_gradient(GradientMode::Detach);
    let mut group = c.benchmark_group(format!("sinkhorn_{name}"));
    group.sample_size(20);
    let solvers = [
        ("balanced", &balanced),
        (
            "balanced_reference",
            &balanced.clone().with_fast_paths(false),
        ),
        ("unbalanced_rho1", &unbalanced),
        (
            "unbalanced_rho1_reference",
            &unbalanced.clone().with_fast_paths(false),
        ),
    ];
    for (label, config) in solvers {
        group.bench_function(format!("{label}_b16_n256_eps0.05"), |bench| {
            bench.iter(|| {
                let t = unbalanced_sinkhorn(cost.clone(), a.clone(), b.clone(), config).unwrap();
                // Reading the plan back makes the timing include all device work.
                t.plan.sum().into_data()
            })
        });
    }
    group.finish();
}

/// Forward and implicit backward: the gradient of `<P, W>` with respect to the cost.
fn bench_gradient<B: OtBackend>(c: &mut Criterion, name: &str, device: &B::Device) {
    let (cost, a, b) = inputs::<Autodiff<B>>(device);
    let weights = Tensor::<Autodiff<B>, 3>::random(
        [BATCH, SIZE, SIZE],
        Distribution::Uniform(-1.0, 1.0),
        device,
    );
    let config = UnbalancedConfig::from(
        &SinkhornConfig::new(EPSILON)
            .with_tolerance(1e-6)
            .with_gradient(GradientMode::Implicit),
    );
    let mut group = c.benchmark_group(format!("sinkhorn_{name}"));
    group.sample_size(20);
    for (label, fused) in [
        ("implicit_gradient", true),
        ("implicit_gradient_reference", false),
    ] {
        let config = config.clone().with_fast_paths(fused);
        group.bench_function(format!("{label}_b16_n256_eps0.05"), |bench| {
            bench.iter(|| {
                let cost = cost.clone().require_grad();
                let t = unbalanced_sinkhorn(cost.clone(), a.clone(), b.clone(), &config).unwrap();
                let grads = (t.plan * weights.clone()).sum().backward();
                cost.grad(&grads).unwrap().sum().into_data()
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_backend::<burn::backend::Flex>(c, "flex", &Default::default());
    bench_gradient::<burn::backend::Flex>(c, "flex", &Default::default());
    #[cfg(feature = "cuda")]
    bench_backend::<burn::backend::Cuda>(c, "cuda", &Default::default());
    #[cfg(feature = "cuda")]
    bench_gradient::<burn::backend::Cuda>(c, "cuda", &Default::default());
}

criterion_group!(sinkhorn_benches, benches);
criterion_main!(sinkhorn_benches);
