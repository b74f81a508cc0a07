//! Parameter counts, as PEFT's `print_trainable_parameters` reports them.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};

/// How many scalar parameters a module has, and how many of them train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParameterCounts {
    /// Parameters that take gradients (and optimizer state).
    pub trainable: usize,
    /// All parameters.
    pub total: usize,
}

impl ParameterCounts {
    /// Counts `module`'s parameters.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut counts = Self::default();
        module.visit(&mut counts);
        counts
    }
}

impl std::fmt::Display for ParameterCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            self.trainable,
            self.total,
            100.0 * self.trainable as f64 / self.total.max(1) as f64
        )
    }
}

impl<B: Backend> ModuleVisitor<B> for ParameterCounts {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let count = param.shape().num_elements();
        self.total += count;
        if param.val().is_require_grad() {
            self.trainable += count;
        }
    }
}
