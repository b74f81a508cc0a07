//! The learning-rate schedule: linear warm-up, then cosine decay to a floor.
//!
//! Written here because burn 0.21's `ComposedLrScheduler` combines schedulers side by side
//! (sum, product, mean), not one after the other; as a pure function of the step it also needs
//! no state in a checkpoint.

use serde::{Deserialize, Serialize};

/// Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to
/// `peak · final_ratio` at `total_steps`: `transformers`' `get_cosine_schedule_with_warmup`
/// when `final_ratio` is 0, except that warm-up counts the step being taken (the first step
/// has `peak / warmup_steps`, not 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WarmupCosine {
    /// The learning rate at the end of warm-up.
    pub peak: f64,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// The step at which the decay ends.
    pub total_steps: usize,
    /// The final learning rate as a share of `peak`.
    pub final_ratio: f64,
}

impl WarmupCosine {
    /// The learning rate for optimizer step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak * (self.final_ratio + (1.0 - self.final_ratio) * cosine)
    }
}
