//! ConfPO's token selection (Yoon et al., ICML 2025, arXiv 2506.08712; released code
//! `hee-suk-yoon/ConfPO`, `cpo_loss_confpo`): only the tokens the policy is least confident
//! about carry the preference loss.
//!
//! For a response y with valid tokens i = 1..n and the policy's log-probabilities
//! ℓ_i = log π_θ(y_i | x, y_<i), the threshold is the log of the mean probability,
//! τ = log((1/n) Σ_j exp ℓ_j), and the critical tokens are S = {i : ℓ_i < τ}. A token's weight
//! is 1[i ∈ S] (ConfPO on DPO) or 1[i ∈ S] / |S| (ConfPO on SimPO, the released recipe). A
//! pair where either response has no critical token (all its probabilities equal, e.g. one
//! token) carries no loss: both its rows are 0. The selection is a constant of the step: no
//! gradient flows through it.

use burn::tensor::{backend::Backend, Tensor};

use super::{ResponseTokens, TokenWeights};
use crate::error::OtprefError;
use crate::host::{host_rows, like};

/// ConfPO's weights of a batch: the critical tokens of each response, weighing 1 or, when
/// `length_normalized`, 1/|S|.
pub(super) fn confpo_weights<B: Backend>(
    tokens: &ResponseTokens<B>,
    length_normalized: bool,
) -> Result<TokenWeights<B>, OtprefError> {
    let (chosen_logps, rejected_logps) = policy_logps(tokens)?;
    let chosen = critical_rows("chosen_logps", &chosen_logps, &tokens.chosen_mask)?;
    let rejected = critical_rows("rejected_logps", &rejected_logps, &tokens.rejected_mask)?;
    let weigh = |rows: &[Vec<bool>], k: usize, keep: bool| -> Vec<f64> {
        let count = rows[k].iter().filter(|c| **c).count();
        let weight = if length_normalized {
            1.0 / count.max(1) as f64
        } else {
            1.0
        };
        rows[k]
            .iter()
            .map(|c| if keep && *c { weight } else { 0.0 })
            .collect()
    };
    let (mut wc, mut wr) = (Vec::new(), Vec::new());
    for k in 0..chosen.len() {
        let keep = chosen[k].contains(&true) && rejected[k].contains(&true);
        wc.extend(weigh(&chosen, k, keep));
        wr.extend(weigh(&rejected, k, keep));
    }
    Ok(TokenWeights {
        chosen: like(&tokens.chosen_mask, wc),
        rejected: like(&tokens.rejected_mask, wr),
        convergence: None,
    })
}

/// The policy's per-token log-probabilities, required by ConfPO, detached.
fn policy_logps<B: Backend>(
    tokens: &ResponseTokens<B>,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), OtprefError> {
    match (&tokens.chosen_logps, &tokens.rejected_logps) {
        (Some(c), Some(r)) => {
            crate::checks::shape("chosen_logps", c, tokens.chosen_mask.dims())?;
            crate::checks::shape("rejected_logps", r, tokens.rejected_mask.dims())?;
            Ok((c.clone().detach(), r.clone().detach()))
        }
        _ => Err(OtprefError::Shape(
            "ConfPo weights need the policy's per-token log-probabilities: set \
             ResponseTokens::chosen_logps and rejected_logps"
                .into(),
        )),
    }
}

/// Per row, whether each position is a critical token: valid and below the log of the row's
/// mean probability over its valid tokens.
fn critical_rows<B: Backend>(
    name: &str,
    logps: &Tensor<B, 2>,
    mask: &Tensor<B, 2>,
) -> Result<Vec<Vec<bool>>, OtprefError> {
    let [_, len] = mask.dims();
    let masks = host_rows(mask, len);
    let rows = host_rows(logps, len);
    rows.iter()
        .zip(&masks)
        .enumerate()
        .map(|(k, (row, valid))| {
            let values: Vec<f64> = (0..len)
                .filter(|i| valid[*i] != 0.0)
                .map(|i| row[i])
                .collect();
            if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
                return Err(OtprefError::NonFinite(format!(
                    "{name} row {k} has {bad} at a response token; ConfPO needs finite \
                     log-probabilities there"
                )));
            }
            let threshold = log_mean_exp(&values);
            Ok((0..len)
                .map(|i| valid[i] != 0.0 && row[i] < threshold)
                .collect())
        })
        .collect()
}

/// log((1/n) Σ exp v), computed from the largest value so that no term overflows.
fn log_mean_exp(values: &[f64]) -> f64 {
    let top = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = values.iter().map(|v| (v - top).exp()).sum();
    top + sum.ln() - (values.len() as f64).ln()
}
