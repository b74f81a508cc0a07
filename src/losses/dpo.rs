//! DPO with per-token weights: one code path for DPO, SimPO, SamPO, LD-DPO and OTPO, whose
//! only difference is the weights (see [`crate::weights`]).

use burn::config::Config;
use burn::tensor::{
    activation::{log_sigmoid, relu},
    backend::Backend,
    Tensor,
};

use crate::checks;
use crate::error::OtprefError;
use crate::weights::TokenWeights;

/// The loss shapes users know from TRL's `DPOTrainer` / `CPOTrainer`.
#[derive(Config, Debug, Copy, PartialEq)]
pub enum DpoLossType {
    /// `−(1−s) log σ(βΔ) − s log σ(−βΔ)`: DPO, conservative DPO when label smoothing `s > 0`.
    Sigmoid,
    /// `(Δ − 1/(2β))^2` (IPO).
    Ipo,
    /// `max(0, 1 − βΔ)` (SLiC hinge).
    Hinge,
    /// `(−(1−s) log σ(βΔ) + s log σ(−βΔ)) / (1 − 2s)`: robust DPO for noisy labels.
    Robust,
    /// SimPO: `−log σ(βΔ − γ)` with Δ from the policy alone. Reference-free: passing
    /// [`DpoInputs::reference`] with it is an error. SimPO proper pairs it with the
    /// length-normalised weights of [`TokenWeighting::SimPo`](crate::TokenWeighting::SimPo).
    SimPo {
        /// Target reward margin γ (SimPO's `gamma`, not divided by β).
        gamma: f64,
    },
}

/// Configuration of [`weighted_dpo_loss`].
#[derive(Config, Debug)]
pub struct DpoLossConfig {
    /// β, the KL strength (OTPO: 0.01 for 8B, 0.1 for 3B models; SimPO: 2.0–2.5).
    #[config(default = 0.1)]
    pub beta: f64,
    /// The loss shape.
    #[config(default = "DpoLossType::Sigmoid")]
    pub loss_type: DpoLossType,
    /// Label smoothing `s ∈ [0, 0.5)` for `Sigmoid` (conservative DPO) and `Robust`.
    #[config(default = 0.0)]
    pub label_smoothing: f64,
}

/// Per-token log-probabilities of one batch of preference pairs.
#[derive(Debug, Clone)]
pub struct DpoInputs<B: Backend> {
    /// `log π_θ(y_c,t | x, y_c,<t)` `[batch, len_c]` (with gradient).
    pub policy_chosen: Tensor<B, 2>,
    /// `log π_θ(y_r,t | ...)` `[batch, len_r]`.
    pub policy_rejected: Tensor<B, 2>,
    /// The reference model's log-probabilities, e.g. precomputed once per dataset; detached
    /// here. `None` for reference-free losses (SimPO).
    pub reference: Option<ReferenceLogps<B>>,
}

/// Per-token log-probabilities of the reference model, `log π_ref`.
#[derive(Debug, Clone)]
pub struct ReferenceLogps<B: Backend> {
    /// `log π_ref(y_c,t | x, y_c,<t)` `[batch, len_c]`.
    pub chosen: Tensor<B, 2>,
    /// `log π_ref(y_r,t | ...)` `[batch, len_r]`.
    pub rejected: Tensor<B, 2>,
}

/// Output of [`weighted_dpo_loss`]: the loss and the metrics DPO trainers log.
#[derive(Debug, Clone)]
pub struct DpoLoss<B: Backend> {
    /// The scalar loss `[1]`, mean over the batch.
    pub loss: Tensor<B, 1>,
    /// Implicit rewards `β Σ_t ω_c,t (log π_θ − log π_ref)` of the chosen responses `[batch]`.
    pub chosen_rewards: Tensor<B, 1>,
    /// Implicit rewards of the rejected responses `[batch]`.
    pub rejected_rewards: Tensor<B, 1>,
    /// `chosen_rewards − rejected_rewards` `[batch]`.
    pub reward_margins: Tensor<B, 1>,
    /// Fraction of pairs whose chosen reward is higher `[1]`.
    pub accuracy: Tensor<B, 1>,
    /// Weighted policy log-probabilities `Σ_t ω_c,t log π_θ(y_c,t)` `[batch]`.
    pub chosen_logps: Tensor<B, 1>,
    /// Weighted policy log-probabilities of the rejected responses `[batch]`.
    pub rejected_logps: Tensor<B, 1>,
}

/// Token-weighted DPO (OTPO, Eq. 11–12), shared by every weighting scheme:
///
/// ```text
/// q = log π_θ − log π_ref         (q = log π_θ without a reference)
/// Δ = Σ_t ω_c,t q_c,t − Σ_t ω_r,t q_r,t
/// loss = mean over pairs of ℓ(Δ)   (ℓ from DpoLossType, e.g. −log σ(βΔ))
/// ```
///
/// Computed in f32 or wider: f16/bf16 inputs are upcast, and the loss comes out in f32.
/// Tensors (and the structs that hold them) are taken by value, as burn's own ops take them;
/// clone one first (a cheap handle copy) to keep it, e.g. to read its gradient. Metrics are
/// detached. Weights are used as given (detach them if they come from the policy);
/// zero weights mask prompt and padding tokens.
///
/// # Errors
/// Shapes that differ between log-probabilities and weights, a missing reference for a loss
/// that needs one, β <= 0, label smoothing outside [0, 0.5), or NaN/Inf in the inputs.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use otpref::{weighted_dpo_loss, DpoInputs, DpoLossConfig, ReferenceLogps, TokenWeights};
///
/// let device = Default::default();
/// let inputs = DpoInputs {
///     policy_chosen: Tensor::<Flex, 2>::from_floats([[-1.0, -2.0]], &device),
///     policy_rejected: Tensor::<Flex, 2>::from_floats([[-3.0, -1.0]], &device),
///     reference: Some(ReferenceLogps {
///         chosen: Tensor::<Flex, 2>::from_floats([[-1.5, -2.0]], &device),
///         rejected: Tensor::<Flex, 2>::from_floats([[-2.0, -1.0]], &device),
///     }),
/// };
/// // Plain DPO: every response token weighs 1 (the masks are the weights).
/// let mask = Tensor::<Flex, 2>::ones([1, 2], &device);
/// let weights = TokenWeights::from_masks(mask.clone(), mask);
/// let out = weighted_dpo_loss(inputs, weights, &DpoLossConfig::new())?;
/// // Δ = 0.5 − (−1) = 1.5, loss = −log σ(0.15)
/// assert!((out.loss.into_scalar() - 0.6209571).abs() < 1e-6);
/// # Ok::<(), otpref::OtprefError>(())
/// ```
pub fn weighted_dpo_loss<B: Backend>(
    inputs: DpoInputs<B>,
    weights: TokenWeights<B>,
    config: &DpoLossConfig,
) -> Result<DpoLoss<B>, OtprefError> {
    let (inputs, weights) = (&inputs, &weights);
    validate(inputs, weights, config)?;
    let beta = config.beta;
    // Sums of many log-probabilities need f32 at least: f16/bf16 inputs are upcast, and the
    // loss and metrics come out in f32.
    let weighted = |logps: Tensor<B, 2>, w: &Tensor<B, 2>| -> Tensor<B, 1> {
        (crate::precision::widened(logps) * crate::precision::widened(w.clone()))
            .sum_dim(1)
            .squeeze_dim(1)
    };
    let chosen_logps = weighted(inputs.policy_chosen.clone(), &weights.chosen);
    let rejected_logps = weighted(inputs.policy_rejected.clone(), &weights.rejected);
    let (chosen_ratio, rejected_ratio) = match &inputs.reference {
        Some(reference) => (
            chosen_logps.clone() - weighted(reference.chosen.clone().detach(), &weights.chosen),
            rejected_logps.clone()
                - weighted(reference.rejected.clone().detach(), &weights.rejected),
        ),
        None => (chosen_logps.clone(), rejected_logps.clone()),
    };
    let delta = chosen_ratio.clone() - rejected_ratio.clone();
    let s = config.label_smoothing;
    let losses = match config.loss_type {
        DpoLossType::Sigmoid => {
            let logits = delta.mul_scalar(beta);
            log_sigmoid(logits.clone()).mul_scalar(-(1.0 - s))
                - log_sigmoid(logits.neg()).mul_scalar(s)
        }
        DpoLossType::Robust => {
            let logits = delta.mul_scalar(beta);
            (log_sigmoid(logits.clone()).mul_scalar(-(1.0 - s))
                + log_sigmoid(logits.neg()).mul_scalar(s))
            .div_scalar(1.0 - 2.0 * s)
        }
        DpoLossType::Ipo => delta.sub_scalar(1.0 / (2.0 * beta)).square(),
        DpoLossType::Hinge => relu(delta.mul_scalar(-beta).add_scalar(1.0)),
        DpoLossType::SimPo { gamma } => log_sigmoid(delta.mul_scalar(beta).sub_scalar(gamma)).neg(),
    };
    let chosen_rewards = chosen_ratio.detach().mul_scalar(beta);
    let rejected_rewards = rejected_ratio.detach().mul_scalar(beta);
    let reward_margins = chosen_rewards.clone() - rejected_rewards.clone();
    let accuracy = reward_margins.clone().greater_elem(0.0).float().mean();
    let loss = losses.mean();
    // Finite inputs can still overflow in Σ ω log π (huge weights or log-probabilities).
    if !crate::host::all_finite(&loss) {
        return Err(OtprefError::NonFinite(format!(
            "the loss overflows {:?}: the weighted log-probability sums are too large; scale the \
             weights down or compute the log-probabilities in f64",
            loss.dtype()
        )));
    }
    Ok(DpoLoss {
        loss,
        chosen_rewards,
        rejected_rewards,
        reward_margins,
        accuracy,
        chosen_logps: chosen_logps.detach(),
        rejected_logps: rejected_logps.detach(),
    })
}

fn validate<B: Backend>(
    inputs: &DpoInputs<B>,
    weights: &TokenWeights<B>,
    config: &DpoLossConfig,
) -> Result<(), OtprefError> {
    let [batch, len_c] = inputs.policy_chosen.dims();
    let [_, len_r] = inputs.policy_rejected.dims();
    if batch == 0 {
        return Err(OtprefError::Shape("the batch is empty".into()));
    }
    checks::shape("policy_rejected", &inputs.policy_rejected, [batch, len_r])?;
    checks::shape("weights.chosen", &weights.chosen, [batch, len_c])?;
    checks::shape("weights.rejected", &weights.rejected, [batch, len_r])?;
    let mut dtypes = vec![
        ("policy_chosen", inputs.policy_chosen.dtype()),
        ("policy_rejected", inputs.policy_rejected.dtype()),
        ("weights.chosen", weights.chosen.dtype()),
        ("weights.rejected", weights.rejected.dtype()),
    ];
    if let Some(reference) = &inputs.reference {
        dtypes.extend([
            ("reference.chosen", reference.chosen.dtype()),
            ("reference.rejected", reference.rejected.dtype()),
        ]);
    }
    checks::same_dtype(&dtypes)?;
    checks::finite("policy_chosen", &inputs.policy_chosen)?;
    checks::finite("policy_rejected", &inputs.policy_rejected)?;
    checks::finite("weights.chosen", &weights.chosen)?;
    checks::finite("weights.rejected", &weights.rejected)?;
    match (&inputs.reference, config.loss_type) {
        (Some(_), DpoLossType::SimPo { .. }) => {
            return Err(OtprefError::InvalidParameter(
                "DpoLossType::SimPo is reference-free, but DpoInputs::reference was given; pass \
                 reference: None, or use DpoLossType::Sigmoid for a loss against the reference"
                    .into(),
            ))
        }
        (Some(reference), _) => {
            checks::shape("reference.chosen", &reference.chosen, [batch, len_c])?;
            checks::shape("reference.rejected", &reference.rejected, [batch, len_r])?;
            checks::finite("reference.chosen", &reference.chosen)?;
            checks::finite("reference.rejected", &reference.rejected)?;
        }
        (None, DpoLossType::SimPo { .. }) => {}
        (None, other) => {
            return Err(OtprefError::InvalidParameter(format!(
                "{other:?} needs reference log-probabilities; pass them in DpoInputs::reference \
                 or use DpoLossType::SimPo for a reference-free loss"
            )))
        }
    }
    if !(config.beta.is_finite() && config.beta > 0.0) {
        return Err(OtprefError::InvalidParameter(format!(
            "beta must be finite and > 0, got {}",
            config.beta
        )));
    }
    // The loss is computed in the widened dtype (f32 for f16/bf16 inputs).
    let dtype = crate::precision::widened_dtype(inputs.policy_chosen.dtype());
    if config.beta > crate::precision::dtype_max(dtype) {
        return Err(OtprefError::InvalidParameter(format!(
            "beta = {:e} is not representable in {dtype:?}; DPO's beta is usually 0.01 to 1",
            config.beta
        )));
    }
    if !(0.0..0.5).contains(&config.label_smoothing) {
        return Err(OtprefError::InvalidParameter(format!(
            "label_smoothing must lie in [0, 0.5), got {}",
            config.label_smoothing
        )));
    }
    if let DpoLossType::SimPo { gamma } = config.loss_type {
        if !gamma.is_finite() {
            return Err(OtprefError::InvalidParameter(format!(
                "SimPO's gamma must be finite, got {gamma}"
            )));
        }
    }
    Ok(())
}
