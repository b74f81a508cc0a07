//! Bad input is an `OtprefError` with a helpful message: never a panic, never a silent NaN.
//! One module per public function (or family); the generated hostile inputs are in
//! `hostile.rs`, the DPO and BT loss errors in `losses.rs`.

mod every_function;
mod solvers;
mod token_weights;

pub(crate) use crate::common::{tensor, TestBackend};
pub(crate) use burn::tensor::{DType, Tensor};
pub(crate) use otpref::{
    sinkhorn, unbalanced_sinkhorn, OtprefError, SinkhornConfig, UnbalancedConfig,
};

fn t3(values: Vec<f64>, shape: [usize; 3]) -> Tensor<TestBackend, 3> {
    tensor(values, shape, DType::F32)
}

fn t2(values: Vec<f64>, shape: [usize; 2]) -> Tensor<TestBackend, 2> {
    tensor(values, shape, DType::F32)
}

fn balanced(cost: Vec<f64>, a: Vec<f64>, b: Vec<f64>, epsilon: f64) -> Result<(), OtprefError> {
    let (n, m) = (a.len(), b.len());
    sinkhorn(
        t3(cost, [1, n, m]),
        t2(a, [1, n]),
        t2(b, [1, m]),
        &SinkhornConfig::new(epsilon),
    )
    .map(|_| ())
}

fn unbalanced(config: UnbalancedConfig) -> Result<(), OtprefError> {
    unbalanced_sinkhorn(
        t3(vec![0.0, 1.0, 1.0, 0.0], [1, 2, 2]),
        t2(vec![0.5, 0.5], [1, 2]),
        t2(vec![0.5, 0.5], [1, 2]),
        &config,
    )
    .map(|_| ())
}

fn message(result: Result<(), OtprefError>) -> String {
    result.unwrap_err().to_string()
}

const COST: [f64; 4] = [0.0, 1.0, 1.0, 0.0];
