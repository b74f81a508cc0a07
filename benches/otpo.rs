//! OTPO token weights for a whole batch: batch 8, 256 tokens per response, hidden 512,
//! ε1 = 0.1, ε2 = 0.2 (the 3B recipe). Compare with the released recipe (POT's
//! `sinkhorn_stabilized` unbalanced solver looped over pairs) via `benches/pot_otpo.py`.
//!
//! `cargo bench --bench otpo` (CPU) or `cargo bench --features cuda --bench otpo`.

use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use otpref::{otpo_token_weights, CostNormalization, OtBackend, OtpoConfig};

const BATCH: usize = 8;
const TOKENS: usize = 256;
const HIDDEN: usize = 512;

fn bench_backend<B: OtBackend>(c: &mut Criterion, name: &str, device: &B::Device) {
    B::seed(device, 0);
    let hidden = |d| Tensor::<B, 3>::random([BATCH, TOKENS, HIDDEN], d, device);
    let chosen = hidden(Distribution::Normal(0.0, 1.0));
    let rejected = hidden(Distribution::Normal(0.0, 1.0));
    let mask = Tensor::<B, 2>::ones([BATCH, TOKENS], device);
    let config = OtpoConfig::new()
        .with_epsilon(0.1)
        .with_marginal_penalty(0.2)
        .with_normalization(CostNormalization::Released);
    let mut group = c.benchmark_group(format!("otpo_{name}"));
    group.sample_size(10);
    group.bench_function("weights_b8_t256_h512_eps0.1", |bench| {
        bench.iter(|| {
            let w = otpo_token_weights(
                chosen.clone(),
                rejected.clone(),
                mask.clone(),
                mask.clone(),
                &config,
            )
            .unwrap();
            w.chosen.sum().into_data()
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_backend::<burn::backend::Flex>(c, "flex", &Default::default());
    #[cfg(feature = "cuda")]
    bench_backend::<burn::backend::Cuda>(c, "cuda", &Default::default());
}

criterion_group!(otpo_benches, benches);
criterion_main!(otpo_benches);
