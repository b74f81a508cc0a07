//! otpref's integration tests, as one test binary (one link instead of one per file, and one
//! file to copy to a GPU machine). Each module tests one public function or property against an
//! independent reference (POT fixtures, closed forms, finite differences).
//!
//! The tests run on the pure-Rust CPU backend; built with the `gpu-tests` feature they run on
//! burn's CUDA backend instead (`scripts/gpu/`), with `wgpu-tests` on burn's wgpu backend (in CI
//! on Mesa's software Vulkan device), and `device_matches_cpu` compares the device with the
//! CPU.

mod common;

mod aplot;
mod configs;
mod confpo_weights;
#[cfg(any(feature = "gpu-tests", feature = "wgpu-tests"))]
mod device_matches_cpu;
mod errors;
mod fused;
mod given_weights;
mod gradients;
mod half_precision;
mod hostile;
mod losses;
mod otpo_fixture_plans;
mod otpo_weights;
mod pot_parity;
mod properties;
mod reductions;
mod stability;
mod testing_checks;
