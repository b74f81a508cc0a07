//! APLOT's adaptive per-pair margins for reward models: balanced OT over the batch.
//!
//! The paper (Li et al., EMNLP 2025) has no public code; this is otpref's reconstruction from
//! its description, written out in `docs/aplot.md`: rows are the chosen responses of the
//! batch, columns the rejected ones, and hard pairs (similar representations, close rewards)
//! get larger margins.

use burn::config::Config;
use burn::tensor::{activation::sigmoid, backend::Backend, Tensor};

use crate::checks;
use crate::error::OtprefError;
use crate::sinkhorn::{sinkhorn, GradientMode, OtBackend, SinkhornConfig};

/// Configuration of [`aplot_margins`].
#[derive(Config, Debug)]
pub struct AplotConfig {
    /// γ, the weight of representation similarity against reward closeness (paper summary:
    /// "γ ≈ 0.5 optimally balances both factors").
    #[config(default = 0.5)]
    pub gamma: f64,
    /// ε of the balanced OT over the batch.
    #[config(default = 0.1)]
    pub epsilon: f64,
    /// Sinkhorn iteration limit.
    #[config(default = 1000)]
    pub max_iters: usize,
    /// Sinkhorn tolerance on the L1 marginal error.
    #[config(default = 1e-6)]
    pub tolerance: f64,
    /// Multiplies the margins.
    #[config(default = 1.0)]
    pub scale: f64,
    /// `Detach` (APLOT: the margin is a constant), or a mode that lets gradients reach the
    /// representations and rewards.
    #[config(default = "GradientMode::Detach")]
    pub gradient: GradientMode,
}

/// APLOT margins `[batch]` from pooled representations `[batch, hidden]` and rewards `[batch]`
/// of the chosen and rejected responses.
///
/// ```text
/// S_ij = (1 + cos(h_c,i, h_r,j)) / 2
/// C_ij = γ S_ij + (1 − γ) (1 − σ(|r_c,i − r_r,j|))
/// T    = balanced entropic OT(C, a = b = 1/B; ε)
/// μ_i  = scale · B · Σ_j T_ij C_ij         (row i's expected cost under the plan)
/// ```
///
/// Since `B Σ_j T_ij = 1`, each margin is a weighted mean of its row's costs and lies in
/// `[0, scale · max C] ⊂ [0, scale]`. Feed the margins to
/// [`bt_margin_loss`](crate::bt_margin_loss()).
///
/// # Errors
/// A batch of fewer than two pairs (OT over one pair says nothing), mismatched shapes,
/// NaN/Inf inputs, γ outside [0, 1], or an invalid Sinkhorn setting.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use otpref::{aplot_margins, AplotConfig};
///
/// let device = Default::default();
/// // Chosen 0 resembles every rejected answer and scores like them; chosen 1 does not.
/// let h_c = Tensor::<Flex, 2>::from_floats([[1.0, 0.1], [-1.0, 0.0]], &device);
/// let h_r = Tensor::<Flex, 2>::from_floats([[1.0, 0.0], [1.0, 0.2]], &device);
/// let r_c = Tensor::<Flex, 1>::from_floats([0.05, 5.0], &device);
/// let r_r = Tensor::<Flex, 1>::from_floats([0.0, 0.1], &device);
/// let margins = aplot_margins(h_c, h_r, r_c, r_r, &AplotConfig::new())?;
/// let m = margins.into_data().to_vec::<f32>().unwrap();
/// // The hard pair gets the larger margin; both lie in [0, scale].
/// assert!(m[0] > m[1] && m[1] >= 0.0 && m[0] <= 1.0);
/// # Ok::<(), otpref::OtprefError>(())
/// ```
pub fn aplot_margins<B: OtBackend>(
    chosen_repr: Tensor<B, 2>,
    rejected_repr: Tensor<B, 2>,
    chosen_rewards: Tensor<B, 1>,
    rejected_rewards: Tensor<B, 1>,
    config: &AplotConfig,
) -> Result<Tensor<B, 1>, OtprefError> {
    let [batch, hidden] = chosen_repr.dims();
    if batch < 2 {
        return Err(OtprefError::Shape(format!(
            "APLOT needs a batch of at least 2 pairs (OT over the batch), got {batch}; use a \
             constant margin for single pairs"
        )));
    }
    checks::shape("rejected_repr", &rejected_repr, [batch, hidden])?;
    checks::shape("chosen_rewards", &chosen_rewards, [batch])?;
    checks::shape("rejected_rewards", &rejected_rewards, [batch])?;
    checks::same_dtype(&[
        ("chosen_repr", chosen_repr.dtype()),
        ("rejected_repr", rejected_repr.dtype()),
        ("chosen_rewards", chosen_rewards.dtype()),
        ("rejected_rewards", rejected_rewards.dtype()),
    ])?;
    // f16/bf16 inputs are computed in f32; the margins come back in their dtype.
    let dtype = chosen_repr.dtype();
    let chosen_repr = crate::precision::widened(chosen_repr);
    let rejected_repr = crate::precision::widened(rejected_repr);
    let chosen_rewards = crate::precision::widened(chosen_rewards);
    let rejected_rewards = crate::precision::widened(rejected_rewards);
    for (name, t) in [
        ("chosen_repr", &chosen_repr),
        ("rejected_repr", &rejected_repr),
    ] {
        checks::finite(name, t)?;
    }
    for (name, t) in [
        ("chosen_rewards", &chosen_rewards),
        ("rejected_rewards", &rejected_rewards),
    ] {
        checks::finite(name, t)?;
    }
    checks::solver_settings(
        "AplotConfig",
        config.epsilon,
        config.max_iters,
        config.tolerance,
    )?;
    if !(0.0..=1.0).contains(&config.gamma) {
        return Err(OtprefError::InvalidParameter(format!(
            "gamma must lie in [0, 1], got {}",
            config.gamma
        )));
    }
    if !(config.scale.is_finite() && config.scale >= 0.0) {
        return Err(OtprefError::InvalidParameter(format!(
            "scale must be finite and >= 0, got {}",
            config.scale
        )));
    }
    let detach = config.gradient == GradientMode::Detach;
    let maybe_detach2 = |t: Tensor<B, 2>| if detach { t.detach() } else { t };
    let maybe_detach1 = |t: Tensor<B, 1>| if detach { t.detach() } else { t };
    let cost = pair_cost(
        maybe_detach2(chosen_repr),
        maybe_detach2(rejected_repr),
        maybe_detach1(chosen_rewards),
        maybe_detach1(rejected_rewards),
        config.gamma,
    );

    let cost = cost.unsqueeze_dim::<3>(0);
    let uniform =
        Tensor::<B, 2>::ones([1, batch], (&cost.device(), cost.dtype())).div_scalar(batch as f64);
    let solver = SinkhornConfig::new(config.epsilon)
        .with_max_iters(config.max_iters)
        .with_tolerance(config.tolerance)
        .with_gradient(config.gradient);
    let plan = sinkhorn(cost.clone(), uniform.clone(), uniform, &solver)?.plan;
    let expected_cost = (plan * cost).sum_dim(2).squeeze_dims::<1>(&[0, 2]);
    let margins = expected_cost.mul_scalar(config.scale * batch as f64);
    Ok(crate::precision::narrowed(margins, dtype))
}

/// `C_ij = γ (1 + cos)/2 + (1 − γ)(1 − σ(|r_c,i − r_r,j|))`, `[batch, batch]`.
fn pair_cost<B: Backend>(
    chosen_repr: Tensor<B, 2>,
    rejected_repr: Tensor<B, 2>,
    chosen_rewards: Tensor<B, 1>,
    rejected_rewards: Tensor<B, 1>,
    gamma: f64,
) -> Tensor<B, 2> {
    let [batch, _] = chosen_repr.dims();
    // Clamp before the square root: sqrt's derivative at 0 is infinite, and an all-zero
    // representation would otherwise get a NaN gradient.
    let unit = |h: Tensor<B, 2>| {
        let norm = h.clone().square().sum_dim(1).clamp_min(1e-24).sqrt();
        h / norm
    };
    let cosine = unit(chosen_repr).matmul(unit(rejected_repr).transpose());
    let similarity = cosine.add_scalar(1.0).div_scalar(2.0);
    let gap = chosen_rewards.unsqueeze_dim::<2>(1).repeat_dim(1, batch)
        - rejected_rewards.unsqueeze_dim::<2>(0).repeat_dim(0, batch);
    let closeness = sigmoid(gap.abs()).neg().add_scalar(1.0);
    similarity.mul_scalar(gamma) + closeness.mul_scalar(1.0 - gamma)
}

/// HardMargin: the same margin for every pair, `[batch]`, for [`bt_margin_loss`](crate::bt_margin_loss()).
///
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use otpref::{aplot::hard_margins, bt_margin_loss, BtLossConfig};
///
/// let device = Default::default();
/// let chosen = Tensor::<Flex, 1>::from_floats([1.0, 2.0], &device);
/// let rejected = Tensor::<Flex, 1>::from_floats([0.5, 0.0], &device);
/// let margins = hard_margins::<Flex>(2, 0.5, &device);
/// let out = bt_margin_loss(chosen, rejected, Some(margins), &BtLossConfig::new())?;
/// // (softplus(0) + softplus(-1.5)) / 2
/// assert!((out.loss.into_scalar() - (0.6931472 + 0.2014133) / 2.0).abs() < 1e-6);
/// # Ok::<(), otpref::OtprefError>(())
/// ```
pub fn hard_margins<B: Backend>(batch: usize, margin: f64, device: &B::Device) -> Tensor<B, 1> {
    Tensor::full([batch], margin, device)
}
