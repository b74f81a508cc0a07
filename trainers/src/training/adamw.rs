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
use rayon::prelude::*;

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
            // Zeroed allocations (calloc: fresh pages stay untouched until the update writes
            // them, on every core), not `TensorData::zeros`' element-by-element loop.
            let zeros = || TensorData::new(vec![0f32; shape.num_elements()], shape.clone());
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
    /// step `m̂ / (√v̂ + ε)` and the decayed parameter `p·(1 − lr·λ) − lr·step`. Large
    /// parameters are split over rayon's threads (each element's arithmetic is unchanged, so
    /// the result is the same to the bit); on the first step this also spreads the first
    /// touch of the fresh moments' pages over the cores.
    fn update(&self, lr: LearningRate, time: usize, first: bool, s: Slices<'_>) {
        let rule = UpdateRule::new(self, lr, time, first);
        let chunks = s
            .param
            .par_chunks_mut(PARALLEL_CHUNK)
            .zip(s.grad.par_chunks(PARALLEL_CHUNK))
            .zip(s.moment_1.par_chunks_mut(PARALLEL_CHUNK))
            .zip(s.moment_2.par_chunks_mut(PARALLEL_CHUNK));
        chunks.for_each(|(((param, grad), moment_1), moment_2)| {
            rule.apply(Slices {
                param,
                grad,
                moment_1,
                moment_2,
            })
        });
    }
}

/// Elements per parallel task of the update: small parameters (norms, biases) stay on one
/// thread, where splitting would cost more than it saves.
const PARALLEL_CHUNK: usize = 1 << 16;

/// The constants of one step's update, shared by its parallel chunks.
struct UpdateRule {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    factor_1: f32,
    factor_2: f32,
    correction_1: f32,
    correction_2: f32,
    /// `lr · λ` (the weight decay's rate), in f64 as burn computes it.
    decay_rate: f64,
    /// `1 − lr · λ`.
    keep: f32,
    lr: f32,
    first: bool,
}

impl UpdateRule {
    fn new(optimizer: &HostAdamW, lr: LearningRate, time: usize, first: bool) -> Self {
        let (beta_1, beta_2) = (optimizer.beta_1, optimizer.beta_2);
        let decay_rate = lr * optimizer.weight_decay as f64;
        Self {
            beta_1,
            beta_2,
            epsilon: optimizer.epsilon,
            factor_1: 1.0 - beta_1,
            factor_2: 1.0 - beta_2,
            correction_1: 1f32 - beta_1.powi(time as i32),
            correction_2: 1f32 - beta_2.powi(time as i32),
            decay_rate,
            keep: (1.0 - decay_rate) as f32,
            lr: lr as f32,
            first,
        }
    }

    /// The update of one chunk of a parameter.
    fn apply(&self, s: Slices<'_>) {
        let moments = s.moment_1.iter_mut().zip(s.moment_2.iter_mut());
        for ((p, g), (m, v)) in s.param.iter_mut().zip(s.grad).zip(moments) {
            let (g, square) = (*g, *g * *g);
            if self.first {
                *m = g * self.factor_1;
                *v = square * self.factor_2;
            } else {
                *m = *m * self.beta_1 + g * self.factor_1;
                *v = *v * self.beta_2 + square * self.factor_2;
            }
            let delta = (*m / self.correction_1) / ((*v / self.correction_2).sqrt() + self.epsilon);
            let decayed = if self.decay_rate == 0.0 {
                *p
            } else {
                *p * self.keep
            };
            *p = decayed - delta * self.lr;
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
