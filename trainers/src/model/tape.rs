//! What a forward keeps for a backward that recomputes (see [`super::checkpointing`]): a
//! checkpointed decoder's layer inputs and the seeds of their random draws, and the head's
//! inputs for log-probabilities computed in chunks; on tapes the model holds.

use std::any::Any;
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, Int, Tensor};

use super::head::HeadRows;
use super::rotary::RotaryTables;

/// Where a forward leaves what its backward will recompute from. The tapes are type-erased
/// because a module's skipped fields cannot depend on its backend.
#[derive(Clone, Default)]
pub struct Tapes {
    tapes: Arc<Mutex<Vec<Box<dyn Any + Send>>>>,
}

impl std::fmt::Debug for Tapes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tapes")
    }
}

impl Tapes {
    pub(super) fn push<T: Any + Send>(&self, tape: T) {
        self.tapes
            .lock()
            .expect("not poisoned")
            .push(Box::new(tape));
    }

    /// Every tape, oldest first (one store holds one kind of tape).
    pub(super) fn take<T: Any>(&self) -> Vec<T> {
        let tapes = std::mem::take(&mut *self.tapes.lock().expect("not poisoned"));
        tapes
            .into_iter()
            .filter_map(|tape| tape.downcast::<T>().ok().map(|t| *t))
            .collect()
    }
}

/// What one checkpointed forward of a decoder keeps: the token ids, every layer's input (not
/// recorded for autodiff), the masks and rotary tables, the seed of each layer's random draws
/// (adapter dropout, replayed exactly), and the leaf the rest of the graph starts from.
pub(super) struct LayerTape<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub inputs: Vec<Tensor<B, 3>>,
    pub rotary: RotaryTables<B>,
    pub masked: Tensor<B, 4, Bool>,
    pub seed: Option<u64>,
    pub leaf: Tensor<B, 3>,
}

/// What a training forward's chunked log-probabilities keep: the decoder's last hidden state
/// as autodiff recorded it, the leaves the loss was computed from instead (the hidden state and
/// the log-probabilities), the rows the head computed and their target tokens.
pub(super) struct HeadTape<B: Backend> {
    pub hidden: Tensor<B, 3>,
    pub hidden_leaf: Tensor<B, 3>,
    pub logps_leaf: Tensor<B, 2>,
    pub targets: Tensor<B, 1, Int>,
    pub rows: HeadRows<B>,
    pub chunk_rows: usize,
}

/// A seed for a training forward's layers, drawn from the backend's own stream (so runs stay
/// reproducible from the run's seed). Each layer's random draws (adapter dropout) start from
/// it, in the forward and in a checkpointed backward's recomputation alike.
pub(super) fn draw_seed<B: Backend>(device: &B::Device) -> u64 {
    let draw = Tensor::<B, 1>::random([1], Distribution::Uniform(0.0, 1.0), device).into_scalar();
    (burn::tensor::ElementConversion::elem::<f64>(draw) * u32::MAX as f64) as u64
}

/// Reseeds the backend for layer `index`'s random draws, when the forward has a `seed`.
pub(super) fn reseed_layer<B: Backend>(device: &B::Device, seed: Option<u64>, index: usize) {
    if let Some(seed) = seed {
        B::seed(device, seed.wrapping_add(index as u64));
    }
}
