//! The DPO family's loss of one batch: the policy's (and reference's) per-token
//! log-probabilities, the method's token weights (OT for OTPO), the weighted DPO loss with
//! TRL's loss shapes, and the RPO term; TRL's metrics.

use std::time::{Duration, Instant};

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use otpref::{
    token_weights, weighted_dpo_loss, DpoInputs, DpoLossConfig, OtBackend, ResponseTokens,
};

use super::dpo::{DpoLoss, DpoMethod, MethodSettings};
use super::reference::{precomputed_tensor, ReferenceLogps};
use super::sft::chosen_nll;
use crate::data::PairBatch;
use crate::error::Result;
use crate::model::CausalLm;
use crate::training::scalar;

/// Everything the DPO family's loss reads from a run's settings.
#[derive(Debug, Clone)]
pub struct DpoObjective {
    /// The token weighting.
    pub method: DpoMethod,
    /// The loss shape.
    pub loss: DpoLoss,
    /// β.
    pub beta: f64,
    /// Label smoothing (conservative DPO, robust DPO).
    pub label_smoothing: f64,
    /// Weight of the chosen responses' NLL added to the loss (TRL's `rpo_alpha`).
    pub rpo_alpha: f64,
    /// The run's seed (SamPO's sampling).
    pub seed: u64,
    /// The methods' own settings.
    pub settings: MethodSettings,
}

/// The loss of one DPO batch and what to log about it.
pub struct StepOutcome<B: AutodiffBackend> {
    /// The loss to differentiate (DPO plus the RPO term).
    pub loss: Tensor<B, 1>,
    /// TRL's metrics and the weights' means.
    pub metrics: Vec<(&'static str, f64)>,
    /// The time the token weights took.
    pub weight_time: Duration,
}

/// The DPO family's loss of `batch` (rows `0..b` chosen, `b..2b` rejected) at step `step`: the
/// policy's log-probabilities against the reference's (precomputed rows when given), weighted
/// by the method, plus `rpo_alpha` times the chosen responses' NLL.
pub fn dpo_loss<B>(
    objective: &DpoObjective,
    step: usize,
    policy: &CausalLm<B>,
    reference: &CausalLm<B::InnerBackend>,
    precomputed: Option<&[ReferenceLogps]>,
    batch: PairBatch<B>,
    device: &B::Device,
) -> Result<StepOutcome<B>>
where
    B: AutodiffBackend + OtBackend,
{
    let b = batch.pairs;
    let [rows, len] = batch.input_ids.dims();
    // Differentiated through `CausalLm::backward` (the head runs in chunks).
    let mask = batch.response_mask;
    let out = policy.forward_logps_where(
        batch.input_ids.clone(),
        batch.attention_mask.clone(),
        mask.clone(),
    );
    let logps = out.logps;
    let reference_logps = objective
        .method
        .uses_reference()
        .then(|| match precomputed {
            Some(rows) => precomputed_tensor::<B>(rows, len - 1, device),
            None => {
                let out = reference.forward_logps_where(
                    batch.input_ids.clone().inner(),
                    batch.attention_mask.clone().inner(),
                    mask.clone().inner(),
                );
                Tensor::from_inner(out.logps)
            }
        });
    // The hidden state at position t predicts token t + 1, as the log-probabilities do.
    let hidden = objective
        .method
        .needs_hidden_states()
        .then(|| out.hidden.slice([0..rows, 0..len - 1]).detach());
    let chosen_nll = chosen_nll(logps.clone(), mask.clone());
    let (out, weights, weight_time) = weighted_loss(
        objective,
        step,
        logps,
        reference_logps,
        hidden,
        batch.token_weights,
        mask.clone(),
    )?;
    let loss = out.loss.clone() + chosen_nll.clone().mul_scalar(objective.rpo_alpha);
    let weight_mean =
        |w: Tensor<B, 2>, m: Tensor<B, 2>| scalar((w * m.clone()).sum() / m.sum().clamp_min(1.0));
    let metrics = vec![
        ("loss", scalar(loss.clone())),
        ("nll_loss", scalar(chosen_nll)),
        ("rewards/chosen", scalar(out.chosen_rewards.mean())),
        ("rewards/rejected", scalar(out.rejected_rewards.mean())),
        ("rewards/margins", scalar(out.reward_margins.mean())),
        ("rewards/accuracies", scalar(out.accuracy)),
        ("logps/chosen", scalar(out.chosen_logps.mean())),
        ("logps/rejected", scalar(out.rejected_logps.mean())),
        (
            "otpref/weights_chosen_mean",
            weight_mean(weights.chosen, mask.clone().narrow(0, 0, b)),
        ),
        (
            "otpref/weights_rejected_mean",
            weight_mean(weights.rejected, mask.narrow(0, b, b)),
        ),
    ];
    Ok(StepOutcome {
        loss,
        metrics,
        weight_time,
    })
}

/// The method's token weights for a batch whose rows `0..b` are chosen and `b..2b` rejected
/// responses (`mask`: the response masks; `hidden`: the shifted hidden states, `logps` the
/// policy's per-token log-probabilities and `given` the data's token weights, each read when
/// the method needs it).
pub fn pair_weights<B: burn::tensor::backend::Backend + OtBackend>(
    objective: &DpoObjective,
    step: usize,
    hidden: Option<Tensor<B, 3>>,
    logps: Option<Tensor<B, 2>>,
    given: Option<Tensor<B, 2>>,
    mask: Tensor<B, 2>,
) -> Result<otpref::TokenWeights<B>> {
    let b = mask.dims()[0] / 2;
    let logps = logps.filter(|_| objective.method.needs_policy_logps());
    let given = given.filter(|_| objective.method.needs_given_weights());
    Ok(token_weights(
        &objective
            .method
            .weighting(&objective.settings, objective.seed, step),
        ResponseTokens {
            chosen_mask: mask.clone().narrow(0, 0, b),
            rejected_mask: mask.narrow(0, b, b),
            chosen_hidden: hidden.clone().map(|h| h.narrow(0, 0, b)),
            rejected_hidden: hidden.map(|h| h.narrow(0, b, b)),
            chosen_logps: logps.clone().map(|l| l.narrow(0, 0, b).detach()),
            rejected_logps: logps.map(|l| l.narrow(0, b, b).detach()),
            chosen_weights: given.clone().map(|w| w.narrow(0, 0, b)),
            rejected_weights: given.map(|w| w.narrow(0, b, b)),
        },
    )?)
}

/// Token weights for the pairs of one batch (rows `0..b` chosen, `b..2b` rejected) and the
/// weighted DPO loss over them; also the time the weights took. `given`: the data's token
/// weights (the batch's `token_weights`).
pub fn weighted_loss<B: burn::tensor::backend::Backend + OtBackend>(
    objective: &DpoObjective,
    step: usize,
    logps: Tensor<B, 2>,
    reference_logps: Option<Tensor<B, 2>>,
    hidden: Option<Tensor<B, 3>>,
    given: Option<Tensor<B, 2>>,
    mask: Tensor<B, 2>,
) -> Result<(otpref::DpoLoss<B>, otpref::TokenWeights<B>, Duration)> {
    let b = mask.dims()[0] / 2;
    let started = Instant::now();
    let weights = pair_weights(objective, step, hidden, Some(logps.clone()), given, mask)?;
    let weight_time = started.elapsed();
    let inputs = DpoInputs {
        policy_chosen: logps.clone().narrow(0, 0, b),
        policy_rejected: logps.narrow(0, b, b),
        reference: reference_logps.map(|r| otpref::ReferenceLogps {
            chosen: r.clone().narrow(0, 0, b),
            rejected: r.narrow(0, b, b),
        }),
    };
    let loss_config = DpoLossConfig::new()
        .with_beta(objective.beta)
        .with_loss_type(
            objective
                .method
                .loss_type(objective.loss, &objective.settings),
        )
        .with_label_smoothing(objective.label_smoothing);
    let out = weighted_dpo_loss(inputs, weights.clone(), &loss_config)?;
    Ok((out, weights, weight_time))
}
