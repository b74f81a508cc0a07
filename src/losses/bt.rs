//! Bradley-Terry loss with per-pair margins (APLOT, HardMargin, PointMargin all feed it).

use burn::config::Config;
use burn::tensor::{activation::log_sigmoid, backend::Backend, Tensor};

use crate::checks;
use crate::error::OtprefError;

/// Configuration of [`bt_margin_loss`].
#[derive(Config, Debug)]
pub struct BtLossConfig {
    /// Coefficient `c` of the reward-centering term `c · mean((r_c + r_r)^2)`, which keeps
    /// rewards near zero (as TRL's `center_rewards_coefficient`); 0 disables it.
    #[config(default = 0.0)]
    pub center_rewards_coefficient: f64,
}

/// Output of [`bt_margin_loss`].
#[derive(Debug, Clone)]
pub struct BtLoss<B: Backend> {
    /// The scalar loss `[1]`.
    pub loss: Tensor<B, 1>,
    /// Fraction of pairs with `r_c > r_r` `[1]` (no gradient).
    pub accuracy: Tensor<B, 1>,
    /// `r_c - r_r` per pair `[batch]` (no gradient).
    pub reward_margins: Tensor<B, 1>,
}

/// Bradley-Terry loss with margins:
///
/// ```text
/// loss = −mean_i log σ(r_c,i − r_r,i − μ_i) + c · mean_i (r_c,i + r_r,i)^2
/// ```
///
/// `chosen_rewards` and `rejected_rewards` are the reward model's scores `[batch]`; `margin`
/// is `[batch]` or `None` (plain BT). Margins are used as given (detach them first if they
/// come from the model, as APLOT does). Uses `log_sigmoid`, exact and finite for extreme
/// rewards. f16/bf16 rewards are computed in f32.
///
/// # Errors
/// A `margin` or `rejected_rewards` whose shape differs from `chosen_rewards` (never
/// broadcast), an empty batch, or NaN/Inf in any input.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use otpref::{bt_margin_loss, BtLossConfig};
///
/// let device = Default::default();
/// let chosen = Tensor::<Flex, 1>::from_floats([1.0, 0.5], &device);
/// let rejected = Tensor::<Flex, 1>::from_floats([0.0, 0.5], &device);
/// let out = bt_margin_loss(chosen, rejected, None, &BtLossConfig::new())?;
/// let loss = out.loss.into_scalar();
/// // (softplus(-1) + softplus(0)) / 2
/// assert!((loss - (0.3132617 + 0.6931472) / 2.0).abs() < 1e-6);
/// # Ok::<(), otpref::OtprefError>(())
/// ```
pub fn bt_margin_loss<B: Backend>(
    chosen_rewards: Tensor<B, 1>,
    rejected_rewards: Tensor<B, 1>,
    margin: Option<Tensor<B, 1>>,
    config: &BtLossConfig,
) -> Result<BtLoss<B>, OtprefError> {
    let (chosen, rejected) = (chosen_rewards, rejected_rewards);
    let [batch] = chosen.dims();
    if batch == 0 {
        return Err(OtprefError::Shape("the batch is empty".into()));
    }
    checks::shape("rejected_rewards", &rejected, [batch])?;
    let mut dtypes = vec![
        ("chosen_rewards", chosen.dtype()),
        ("rejected_rewards", rejected.dtype()),
    ];
    if let Some(margin) = &margin {
        dtypes.push(("margin", margin.dtype()));
    }
    checks::same_dtype(&dtypes)?;
    checks::finite("chosen_rewards", &chosen)?;
    checks::finite("rejected_rewards", &rejected)?;
    if let Some(margin) = &margin {
        checks::shape("margin", margin, [batch])?;
        checks::finite("margin", margin)?;
    }
    let c = config.center_rewards_coefficient;
    if !c.is_finite() || c < 0.0 {
        return Err(OtprefError::InvalidParameter(format!(
            "center_rewards_coefficient must be finite and >= 0, got {c}"
        )));
    }

    // The loss is computed in f32 or wider: f16/bf16 rewards are upcast.
    let (chosen, rejected) = (
        crate::precision::widened(chosen),
        crate::precision::widened(rejected),
    );
    let margin = margin.map(crate::precision::widened);
    let reward_margins = chosen.clone() - rejected.clone();
    let logits = match margin {
        Some(margin) => reward_margins.clone() - margin,
        None => reward_margins.clone(),
    };
    let mut loss = log_sigmoid(logits).mean().neg();
    if c > 0.0 {
        loss = loss + (chosen + rejected).square().mean().mul_scalar(c);
    }
    // Finite rewards can still overflow in their difference or square.
    if !crate::host::all_finite(&loss) {
        return Err(OtprefError::NonFinite(format!(
            "the loss overflows {:?}: the rewards (or their margins) are too large; check the \
             reward head's outputs",
            loss.dtype()
        )));
    }
    let reward_margins = reward_margins.detach();
    let accuracy = reward_margins.clone().greater_elem(0.0).float().mean();
    Ok(BtLoss {
        loss,
        accuracy,
        reward_margins,
    })
}
