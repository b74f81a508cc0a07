//! The reward model's loss of one batch: Bradley-Terry with no margin, a fixed margin, the
//! data's margins, or APLOT's adaptive margins (OT over the batch), with reward centering;
//! TRL's metrics.

use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use clap::ValueEnum;
use otpref::aplot::hard_margins;
use otpref::{aplot_margins, bt_margin_loss, AplotConfig, BtLossConfig, OtBackend};
use serde::{Deserialize, Serialize};

use crate::data::PairBatch;
use crate::error::Result;
use crate::model::RewardModel;
use crate::training::{scalar, Replica};

/// The reward model's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewardLoss {
    /// Bradley-Terry: −log σ(r_c − r_r).
    Bt,
    /// −log σ(r_c − r_r − m) with one margin m for every pair (--hard-margin).
    HardMargin,
    /// −log σ(r_c − r_r − m) with the data's `margin` column (TRL's reward trainer).
    PointMargin,
    /// APLOT: margins from OT over the batch's representations and rewards.
    Aplot,
}

/// Everything the reward model's loss reads from a run's settings.
#[derive(Debug, Clone)]
pub struct RewardObjective {
    /// The loss.
    pub loss: RewardLoss,
    /// The margin of [`RewardLoss::HardMargin`].
    pub hard_margin: f64,
    /// APLOT's settings.
    pub aplot: AplotConfig,
    /// Reward centering's coefficient.
    pub center_rewards: f64,
    /// The run's replicas: APLOT's margins are OT over the whole global batch, so each
    /// replica gathers every replica's rows before computing them.
    pub replica: Replica,
}

/// The loss of one reward-model batch and what to log about it.
pub struct RewardOutcome<B: AutodiffBackend> {
    /// The loss to differentiate.
    pub loss: Tensor<B, 1>,
    /// TRL's metrics and the margins' mean.
    pub metrics: Vec<(&'static str, f64)>,
    /// The time the margins took (OT for APLOT).
    pub margin_time: Duration,
}

/// The reward model's loss of `batch` (rows `0..b` chosen, `b..2b` rejected): the rewards,
/// the objective's margins, the Bradley-Terry loss with reward centering.
pub fn reward_loss<B>(
    objective: &RewardObjective,
    model: &RewardModel<B>,
    batch: PairBatch<B>,
) -> Result<RewardOutcome<B>>
where
    B: AutodiffBackend + OtBackend,
{
    let b = batch.pairs;
    let out = model.forward(batch.input_ids, batch.attention_mask);
    let chosen = out.rewards.clone().narrow(0, 0, b);
    let rejected = out.rewards.narrow(0, b, b);
    let started = Instant::now();
    let margin = match objective.loss {
        RewardLoss::Bt => None,
        RewardLoss::HardMargin => Some(hard_margins::<B>(
            b,
            objective.hard_margin,
            &chosen.device(),
        )),
        RewardLoss::PointMargin => Some(batch.margins.expect("checked before training")),
        RewardLoss::Aplot => Some(global_aplot_margins(
            objective,
            out.pooled.detach(),
            chosen.clone().detach(),
            rejected.clone().detach(),
        )?),
    };
    let margin_time = started.elapsed();
    let margin_mean = margin.clone().map_or(0.0, |m| scalar(m.mean()));
    let loss = bt_margin_loss(
        chosen.clone(),
        rejected.clone(),
        margin,
        &BtLossConfig::new().with_center_rewards_coefficient(objective.center_rewards),
    )?;
    let all = Tensor::cat(vec![chosen.clone(), rejected.clone()], 0).detach();
    let metrics = vec![
        ("loss", scalar(loss.loss.clone())),
        ("accuracy", scalar(loss.accuracy)),
        ("margin", scalar(loss.reward_margins.mean())),
        ("rewards/chosen", scalar(chosen.mean())),
        ("rewards/rejected", scalar(rejected.mean())),
        ("rewards/mean", scalar(all.clone().mean())),
        ("rewards/std", scalar(all.var(0).sqrt().reshape([1]))),
        ("otpref/margin_mean", margin_mean),
    ];
    Ok(RewardOutcome {
        loss: loss.loss,
        metrics,
        margin_time,
    })
}

/// APLOT's margins of this replica's `b` pairs, computed by OT over the global batch: every
/// replica's pooled representations `[2b, hidden]` (chosen rows, then rejected) and rewards
/// `[b]` gathered in rank order, the OT problem solved on all of them, this replica's rows of
/// the result kept. With one replica, the batch's own margins. Margins take no gradient, so
/// the gather needs none.
fn global_aplot_margins<B>(
    objective: &RewardObjective,
    pooled: Tensor<B, 2>,
    chosen: Tensor<B, 1>,
    rejected: Tensor<B, 1>,
) -> Result<Tensor<B, 1>>
where
    B: AutodiffBackend + OtBackend,
{
    let replica = &objective.replica;
    let b = chosen.dims()[0];
    let gather2 = |t: Tensor<B, 2>| replica.gather_rows(t.inner()).map(Tensor::from_inner);
    let gather1 = |t: Tensor<B, 1>| replica.gather_rows(t.inner()).map(Tensor::from_inner);
    let pooled_chosen = gather2(pooled.clone().narrow(0, 0, b))?;
    let pooled_rejected = gather2(pooled.narrow(0, b, b))?;
    let margins = aplot_margins(
        pooled_chosen,
        pooled_rejected,
        gather1(chosen)?,
        gather1(rejected)?,
        &objective.aplot,
    )?;
    Ok(margins.narrow(0, replica.rank() * b, b))
}
