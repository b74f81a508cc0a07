//! The DPO trainer's two phases as methods of the training loop: the supervised warm-up and
//! token-weighted DPO.

use std::borrow::Cow;
use std::time::Duration;

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use otpref::OtBackend;

use super::dpo_config::DpoConfig;
use super::dpo_eval::{held_out, log_held_out};
use crate::data::{collate_indices, TokenizedPair};
use crate::error::Result;
use crate::methods::{dpo_loss, sft_loss, DpoObjective, ReferenceLogps};
use crate::model::CausalLm;
use crate::training::{scalar, Method, MetricsLog, MicroStep};

/// The supervised warm-up as a [`Method`]: the chosen responses' NLL.
pub(super) struct SftStep<'a, B: Backend> {
    pub(super) pairs: &'a [TokenizedPair],
    pub(super) pad: u32,
    pub(super) device: &'a B::Device,
}

impl<B: AutodiffBackend> Method<B> for SftStep<'_, B> {
    type Model = CausalLm<B>;

    fn backward(&self, model: &CausalLm<B>, loss: Tensor<B, 1>) -> GradientsParams {
        model.backward(loss)
    }

    fn phase(&self) -> &'static str {
        "sft"
    }

    fn loss(&mut self, model: &CausalLm<B>, indices: &[usize], _: usize) -> Result<MicroStep<B>> {
        let batch = collate_indices::<B>(self.pairs, indices, self.pad, self.device);
        let tokens = batch.num_tokens;
        let loss = sft_loss(model, batch);
        Ok(MicroStep {
            metrics: vec![("loss", scalar(loss.clone()))],
            loss,
            tokens,
        })
    }

    /// The SFT loss is a mean over the chosen responses' tokens (EOS included).
    fn loss_items(&self, indices: &[usize]) -> Option<usize> {
        Some(indices.iter().map(|&i| self.pairs[i].chosen.len()).sum())
    }
}

/// The DPO phase as a [`Method`]: token weights, the weighted DPO loss, held-out pairs.
pub(super) struct DpoStep<'a, B: AutodiffBackend> {
    pub(super) config: &'a DpoConfig,
    pub(super) objective: DpoObjective,
    pub(super) reference: &'a CausalLm<B::InnerBackend>,
    pub(super) precomputed: Option<Vec<ReferenceLogps>>,
    pub(super) pairs: Cow<'a, [TokenizedPair]>,
    pub(super) eval_pairs: &'a [TokenizedPair],
    pub(super) pad: u32,
    pub(super) device: &'a B::Device,
    pub(super) weight_time: Duration,
}

impl<B> Method<B> for DpoStep<'_, B>
where
    B: AutodiffBackend + OtBackend,
    B::InnerBackend: OtBackend,
{
    type Model = CausalLm<B>;

    fn backward(&self, model: &CausalLm<B>, loss: Tensor<B, 1>) -> GradientsParams {
        model.backward(loss)
    }

    fn phase(&self) -> &'static str {
        "dpo"
    }

    fn shown(&self) -> &'static [&'static str] {
        &["loss", "rewards/accuracies", "rewards/margins"]
    }

    fn loss(
        &mut self,
        model: &CausalLm<B>,
        indices: &[usize],
        step: usize,
    ) -> Result<MicroStep<B>> {
        let batch = collate_indices::<B>(&self.pairs[..], indices, self.pad, self.device);
        let tokens = batch.num_tokens;
        let precomputed = self
            .precomputed
            .as_ref()
            .map(|all| indices.iter().map(|&i| all[i].clone()).collect::<Vec<_>>());
        let outcome = dpo_loss(
            &self.objective,
            step,
            model,
            self.reference,
            precomputed.as_deref(),
            batch,
            self.device,
        )?;
        self.weight_time += outcome.weight_time;
        Ok(MicroStep {
            loss: outcome.loss,
            metrics: outcome.metrics,
            tokens,
        })
    }

    fn timing_metrics(&self, step_time: Duration) -> Vec<(&'static str, f64)> {
        let share = self.weight_time.as_secs_f64() / step_time.as_secs_f64().max(1e-9);
        vec![("otpref/weight_time_share", share)]
    }

    fn evaluate(
        &mut self,
        model: &CausalLm<B>,
        step: usize,
        metrics: &mut MetricsLog,
    ) -> Result<Option<String>> {
        let held_out = held_out(
            &self.objective,
            self.config.common.batch_size,
            &model.valid(),
            self.reference,
            self.eval_pairs,
            self.pad,
            self.device,
        )?;
        Ok(Some(log_held_out(metrics, step, &held_out)))
    }
}
