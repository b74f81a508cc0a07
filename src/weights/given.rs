//! Token weights the caller computed itself (a critic's per-token credit, a process reward
//! model's step scores, weights read from data), checked and masked so that they enter
//! [`weighted_dpo_loss`](crate::weighted_dpo_loss()) like every built-in scheme's.
//!
//! The weight of token i is w_i on response tokens and exactly 0 on prompt and padding
//! positions, whatever the tensor holds there. Gradients flow through w when the caller's
//! tensor is tracked (detach it for constant weights).

use burn::tensor::{backend::Backend, Tensor};

use super::{ResponseTokens, TokenWeights};
use crate::error::OtprefError;
use crate::host::host_rows;

/// The caller's weights, checked (shape, finite and non-negative on response tokens) and
/// zeroed outside the responses.
pub(super) fn given_weights<B: Backend>(
    tokens: &ResponseTokens<B>,
) -> Result<TokenWeights<B>, OtprefError> {
    let (Some(chosen), Some(rejected)) = (&tokens.chosen_weights, &tokens.rejected_weights) else {
        return Err(OtprefError::Shape(
            "TokenWeighting::Given uses the caller's weights: set ResponseTokens::chosen_weights \
             and rejected_weights (ResponseTokens::with_weights)"
                .into(),
        ));
    };
    Ok(TokenWeights {
        chosen: masked("chosen_weights", chosen, &tokens.chosen_mask)?,
        rejected: masked("rejected_weights", rejected, &tokens.rejected_mask)?,
        convergence: None,
    })
}

/// `weights` where `mask` is 1, exactly 0 elsewhere, after checking the response tokens'
/// values.
fn masked<B: Backend>(
    name: &str,
    weights: &Tensor<B, 2>,
    mask: &Tensor<B, 2>,
) -> Result<Tensor<B, 2>, OtprefError> {
    crate::checks::shape(name, weights, mask.dims())?;
    let [_, len] = mask.dims();
    let rows = host_rows(&weights.clone().detach(), len);
    for (k, (row, valid)) in rows.iter().zip(host_rows(mask, len)).enumerate() {
        let bad = (0..len).find(|&i| valid[i] != 0.0 && !(row[i].is_finite() && row[i] >= 0.0));
        if let Some(i) = bad {
            return Err(OtprefError::InvalidParameter(format!(
                "{name} row {k} position {i} is {}, at a response token: token weights must be \
                 finite and 0 or more",
                row[i]
            )));
        }
    }
    // mask_where rather than a product: a NaN the caller left at a padded position must not
    // reach the loss (NaN · 0 is NaN).
    let outside = mask.clone().equal_elem(0.0);
    Ok(weights.clone().mask_where(outside, mask.zeros_like()))
}
