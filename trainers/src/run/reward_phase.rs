//! The reward model's training as a method of the training loop.

use std::time::Duration;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use otpref::OtBackend;

use crate::data::{collate_indices, TokenizedPair};
use crate::error::Result;
use crate::methods::{reward_loss, RewardObjective};
use crate::model::RewardModel;
use crate::training::{Method, MetricsLog, MicroStep};

use super::reward_config::RewardConfig;
use super::reward_eval::{accuracy, log_accuracy};

/// The reward model's training as a [`Method`]: the chosen and rejected rewards, the run's
/// margins (APLOT's from OT over the batch), the Bradley-Terry loss; held-out accuracy.
pub(super) struct RewardStep<'a, B: Backend> {
    pub(super) config: &'a RewardConfig,
    pub(super) objective: RewardObjective,
    pub(super) pairs: &'a [TokenizedPair],
    pub(super) eval_pairs: &'a [TokenizedPair],
    pub(super) pad: u32,
    pub(super) device: &'a B::Device,
    pub(super) margin_time: Duration,
}

impl<B> Method<B> for RewardStep<'_, B>
where
    B: AutodiffBackend + OtBackend,
{
    type Model = RewardModel<B>;

    fn backward(&self, model: &RewardModel<B>, loss: Tensor<B, 1>) -> GradientsParams {
        model.backward(loss)
    }

    fn phase(&self) -> &'static str {
        "reward"
    }

    fn shown(&self) -> &'static [&'static str] {
        &["loss", "accuracy"]
    }

    fn loss(
        &mut self,
        model: &RewardModel<B>,
        indices: &[usize],
        _: usize,
    ) -> Result<MicroStep<B>> {
        let batch = collate_indices::<B>(self.pairs, indices, self.pad, self.device);
        let tokens = batch.num_tokens;
        let outcome = reward_loss(&self.objective, model, batch)?;
        self.margin_time += outcome.margin_time;
        Ok(MicroStep {
            loss: outcome.loss,
            metrics: outcome.metrics,
            tokens,
        })
    }

    fn timing_metrics(&self, step_time: Duration) -> Vec<(&'static str, f64)> {
        let share = self.margin_time.as_secs_f64() / step_time.as_secs_f64().max(1e-9);
        vec![("otpref/margin_time_share", share)]
    }

    fn evaluate(
        &mut self,
        model: &RewardModel<B>,
        step: usize,
        metrics: &mut MetricsLog,
    ) -> Result<Option<String>> {
        let batch_size = self.config.common.batch_size;
        let held_out = accuracy(
            &model.valid(),
            self.eval_pairs,
            batch_size,
            self.pad,
            self.device,
        );
        Ok(Some(log_accuracy(metrics, step, &held_out)))
    }
}
