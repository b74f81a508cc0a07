//! AdamW whose update of a parameter is one pass over host memory on CPU backends.
//!
//! burn's `AdamW` computes an update as a dozen tensor operations, each a pass over the
//! parameter with a fresh result: for a 135M-parameter model that is ~0.8 s of a 7 s step on
//! two cores. On backends whose tensors live in host memory (`OtBackend::HOST_MEMORY`) this
//! optimizer takes the parameter, gradient and moments out of their tensors (without a copy
//! when nothing else holds them) and updates them in place in one loop, with burn's
//! arithmetic operation for operation, so the numbers are burn's to the bit. Elsewhere (CUDA),
//! and for dtypes other than f32, it is burn's `AdamW`. State, records and checkpoints are
//! burn's `AdamWState`, so runs resume across the two paths. Without AMSGrad or cautious
//! weight decay (the trainers use neither).

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamWConfig, AdamWState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};

/// AdamW with torch's and burn's update rule; see the module's documentation.
#[derive(Clone)]
pub struct HostAdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
    /// Whether tensors are host memory (the one-pass update serves).
    host: bool,
    /// burn's optimizer, for the other backends and dtypes.
    burn: burn::optim::AdamW,
}

impl HostAdamW {
    /// β (0.9, 0.999) as torch's, `weight_decay` and `epsilon`; `host`: whether the backend's
    /// tensors live in host memory (`<B as OtBackend>::HOST_MEMORY`).
    pub fn new(weight_decay: f32, epsilon: f32, host: bool) -> Self {
        let (beta_1, beta_2) = (0.9, 0.999);
        let burn = AdamWConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_weight_decay(weight_decay)
            .with_epsilon(epsilon)
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            host,
            burn,
        }
    }

    /// The optimizer of module `M`'s parameters (burn's `AdamWConfig::init`).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Self, M, B> {
        OptimizerAdaptor::from(self)
    }
}

impl<B: Backend> SimpleOptimizer<B> for HostAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let f32_moments = state.as_ref().is_none_or(|s| {
            s.momentum.moment_1.dtype() == DType::F32 && s.momentum.moment_2.dtype() == DType::F32
        });
        if !self.host || tensor.dtype() != DType::F32 || grad.dtype() != DType::F32 || !f32_moments
        {
            return self.burn.step(lr, tensor, grad, state);
        }
        let (tensor, momentum) = self.host_step(lr, tensor, grad, state.map(|s| s.momentum));
        (tensor, Some(AdamWState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <burn::optim::AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}

impl HostAdamW {
    /// The update in one pass over host copies (moved out, not copied, when unshared).
    fn host_step<B: Backend, const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<AdaptiveMomentumState<B, D>>,
    ) -> (Tensor<B, D>, AdaptiveMomentumState<B, D>) {
        let device = tensor.device();
        let shape = tensor.shape();
        let host = |t: Tensor<B, D>| t.into_data();
        let (mut param, grad) = (host(tensor), host(grad));
        let (moments, time) = match state {
            Some(s) => (Some((host(s.moment_1), host(s.moment_2))), s.time + 1),
            None => (None, 1),
        };
        let (mut moment_1, mut moment_2) = moments.unwrap_or_else(|| {
            let zeros = || TensorData::zeros::<f32, _>(shape.clone());
            (zeros(), zeros())
        });
        let first = time == 1;
        self.update(
            lr,
            time,
            first,
            Slices {
                param: param.as_mut_slice::<f32>().expect("f32 parameter"),
                grad: grad.as_slice::<f32>().expect("f32 gradient"),
                moment_1: moment_1.as_mut_slice::<f32>().expect("f32 moment"),
                moment_2: moment_2.as_mut_slice::<f32>().expect("f32 moment"),
            },
        );
        let tensor = |data: TensorData| Tensor::from_data(data, &device);
        let momentum = AdaptiveMomentumState::new(time, tensor(moment_1), tensor(moment_2));
        (tensor(param), momentum)
    }

    /// burn's AdamW on slices, each operation as burn's tensor ops do it in f32: the moments
    /// (`m·β₁ + g·(1 − β₁)`; at the first step `g·(1 − β₁)`), their bias corrections, the
    /// step `m̂ / (√v̂ + ε)` and the decayed parameter `p·(1 − lr·λ) − lr·step`.
    fn update(&self, lr: LearningRate, time: usize, first: bool, s: Slices<'_>) {
        let (beta_1, beta_2, epsilon) = (self.beta_1, self.beta_2, self.epsilon);
        let (factor_1, factor_2) = (1.0 - beta_1, 1.0 - beta_2);
        let correction_1 = 1f32 - beta_1.powi(time as i32);
        let correction_2 = 1f32 - beta_2.powi(time as i32);
        let decay_rate = lr * self.weight_decay as f64;
        let keep = (1.0 - decay_rate) as f32;
        let lr = lr as f32;
        let moments = s.moment_1.iter_mut().zip(s.moment_2.iter_mut());
        for ((p, g), (m, v)) in s.param.iter_mut().zip(s.grad).zip(moments) {
            let (g, square) = (*g, *g * *g);
            if first {
                *m = g * factor_1;
                *v = square * factor_2;
            } else {
                *m = *m * beta_1 + g * factor_1;
                *v = *v * beta_2 + square * factor_2;
            }
            let delta = (*m / correction_1) / ((*v / correction_2).sqrt() + epsilon);
            let decayed = if decay_rate == 0.0 { *p } else { *p * keep };
            *p = decayed - delta * lr;
        }
    }
}

/// One parameter's values, gradient and moments, side by side.
struct Slices<'a> {
    param: &'a mut [f32],
    grad: &'a [f32],
    moment_1: &'a mut [f32],
    moment_2: &'a mut [f32],
}
