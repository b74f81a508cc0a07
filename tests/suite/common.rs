//! Helpers shared by the integration tests.
#![allow(dead_code)]

use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, DType, Tensor};

/// The backend the tests run on: the pure-Rust CPU backend by default, ndarray with
/// `ndarray-tests`, CUDA with `gpu-tests`, wgpu (any Vulkan device, Mesa's software one in CI)
/// with `wgpu-tests`.
#[cfg(not(any(
    feature = "gpu-tests",
    feature = "ndarray-tests",
    feature = "wgpu-tests"
)))]
pub type TestBackend = burn::backend::Flex;
/// The backend the tests run on: ndarray with `ndarray-tests`.
#[cfg(all(
    feature = "ndarray-tests",
    not(any(feature = "gpu-tests", feature = "wgpu-tests"))
))]
pub type TestBackend = burn::backend::NdArray;
/// The backend the tests run on: CUDA with `gpu-tests`.
#[cfg(feature = "gpu-tests")]
pub type TestBackend = burn::backend::Cuda;
/// The backend the tests run on: wgpu with `wgpu-tests`.
#[cfg(all(feature = "wgpu-tests", not(feature = "gpu-tests")))]
pub type TestBackend = burn::backend::Vulkan;
/// The same with autodiff.
pub type TestAutodiff = Autodiff<TestBackend>;

/// One problem of a batch, unpadded (otpref's testing type).
pub use otpref::testing::OtProblem as Problem;

/// Pads problems into one batch `[batch, n_max, m_max]` on the default device; padding gets
/// zero mass and a cost of `pad_cost` (the solver must never read it).
pub fn pad_batch<B: Backend>(
    problems: &[Problem],
    pad_cost: f64,
    dtype: DType,
) -> (Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2>) {
    otpref::testing::pad_problems(problems, pad_cost, dtype, &Default::default())
}

/// A tensor of the given dtype on the default device.
pub fn tensor<B: Backend, const D: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    dtype: DType,
) -> Tensor<B, D> {
    otpref::testing::tensor(values, shape, dtype, &Default::default())
}

/// A tensor's values as f64.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    otpref::testing::host_values(t)
}

/// Small deterministic generator (SplitMix64) so tests need no extra crate for fixed data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn vec(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..len).map(|_| lo + (hi - lo) * self.next_f64()).collect()
    }
}

/// A random problem with costs in [0, 1] and positive masses summing to 1 (if normalised).
pub fn random_problem(rng: &mut Rng, n: usize, m: usize, normalised: bool) -> Problem {
    let cost = rng.vec(n * m, 0.0, 1.0);
    let mut a = rng.vec(n, 0.1, 1.0);
    let mut b = rng.vec(m, 0.1, 1.0);
    if normalised {
        let (sa, sb): (f64, f64) = (a.iter().sum(), b.iter().sum());
        a.iter_mut().for_each(|v| *v /= sa);
        b.iter_mut().for_each(|v| *v /= sb);
    }
    Problem { n, m, cost, a, b }
}

/// Proptest settings for CI: a fixed case count (`PROPTEST_CASES` overrides it, as the GPU
/// script does to stay within its time) and, unless `PROPTEST_RNG_SEED` is set (to explore
/// other cases locally), a fixed seed so that every CI run checks the same cases.
pub fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let mut config = proptest::test_runner::Config::with_cases(cases);
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(20_261_121);
    }
    config
}

/// All numbers of a JSON value (nested arrays flattened in order): fixture plans and states.
pub fn floats(value: &serde_json::Value) -> Vec<f64> {
    match value {
        serde_json::Value::Array(items) => items.iter().flat_map(floats).collect(),
        other => vec![other.as_f64().expect("a number")],
    }
}
