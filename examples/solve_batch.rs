//! Solves a padded batch of random OT problems of different sizes and prints what a user checks
//! first: iterations, convergence and marginals.
//!
//! CPU: `cargo run --release --example solve_batch`
//! CUDA: `cargo run --release --features cuda --example solve_batch -- --cuda`

use burn::tensor::{backend::Backend, Distribution, Tensor};
use otpref::{sinkhorn, unbalanced_sinkhorn, OtBackend, SinkhornConfig, UnbalancedConfig};

fn run<B: OtBackend>(device: &B::Device) -> Result<(), otpref::OtprefError> {
    // Three problems of sizes 256x256, 200x180 and 64x250, padded to 256x256.
    let (batch, n, m) = (3, 256, 256);
    let sizes = [(256, 256), (200, 180), (64, 250)];
    let cost = Tensor::<B, 3>::random([batch, n, m], Distribution::Uniform(0.0, 1.0), device);
    let mut a_rows = Vec::new();
    let mut b_rows = Vec::new();
    for (rows, cols) in sizes {
        a_rows.push(uniform_masses::<B>(rows, n, device));
        b_rows.push(uniform_masses::<B>(cols, m, device));
    }
    let a = Tensor::stack::<2>(a_rows, 0);
    let b = Tensor::stack::<2>(b_rows, 0);

    let balanced = sinkhorn(
        cost.clone(),
        a.clone(),
        b.clone(),
        &SinkhornConfig::new(0.05),
    )?;
    println!("balanced, eps = 0.05");
    for (k, (rows, cols)) in sizes.iter().enumerate() {
        println!(
            "  problem {k} ({rows}x{cols}): {} iterations, converged = {}, ||P1 - a||_1 = {:.2e}",
            balanced.iterations[k], balanced.converged[k], balanced.marginal_error[k]
        );
    }
    let config = UnbalancedConfig::new(0.05, 0.5, 0.5);
    let unbalanced = unbalanced_sinkhorn(cost, a, b, &config)?;
    let mass = unbalanced.plan.sum_dims(&[1, 2]).into_data();
    println!("unbalanced, eps = 0.05, rho = 0.5: transported mass per problem {mass}");
    Ok(())
}

/// `len` valid entries of mass `1/len`, then zero padding up to `padded`.
fn uniform_masses<B: Backend>(len: usize, padded: usize, device: &B::Device) -> Tensor<B, 1> {
    let values: Vec<f32> = (0..padded)
        .map(|i| if i < len { 1.0 / len as f32 } else { 0.0 })
        .collect();
    Tensor::from_floats(values.as_slice(), device)
}

fn main() -> Result<(), otpref::OtprefError> {
    if std::env::args().any(|arg| arg == "--cuda") {
        #[cfg(feature = "cuda")]
        return run::<burn::backend::Cuda>(&Default::default());
        #[cfg(not(feature = "cuda"))]
        panic!("rebuild with `--features cuda` to run on the GPU");
    }
    run::<burn::backend::Flex>(&Default::default())
}
