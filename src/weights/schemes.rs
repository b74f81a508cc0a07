//! The weighting schemes other than OTPO, and the dispatcher shared by all of them.

use burn::tensor::{activation::softmax, backend::Backend, Tensor};

use super::confpo::confpo_weights;
use super::given::given_weights;
use super::otpo::{budget_tensors, budgets, otpo_token_weights};
use super::{ResponseTokens, TokenWeighting, TokenWeights};
use crate::checks;
use crate::error::OtprefError;
use crate::host::{host_rows, like};
use crate::sinkhorn::OtBackend;

/// Token weights of a batch under any scheme: the one call a trainer makes, whatever the
/// method. Feed the result to [`weighted_dpo_loss`](crate::weighted_dpo_loss()).
///
/// # Errors
/// Mask shapes that differ from the hidden states', masks that are not 0/1, an empty
/// response, missing hidden states for `Otpo`/`Similarity`, or α outside [0, 1].
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use otpref::{token_weights, ResponseTokens, TokenWeighting};
///
/// let device = Default::default();
/// let tokens = ResponseTokens::from_masks(
///     Tensor::<Flex, 2>::from_floats([[0.0, 1.0, 1.0, 1.0]], &device),
///     Tensor::<Flex, 2>::from_floats([[0.0, 1.0, 0.0]], &device),
/// );
/// let w = token_weights(&TokenWeighting::LdDpo { alpha: 0.5 }, tokens)?;
/// assert_eq!(w.chosen.into_data().to_vec::<f32>().unwrap(), vec![0.0, 1.0, 0.5, 0.5]);
/// # Ok::<(), otpref::OtprefError>(())
/// ```
pub fn token_weights<B: OtBackend>(
    method: &TokenWeighting,
    tokens: ResponseTokens<B>,
) -> Result<TokenWeights<B>, OtprefError> {
    let tokens = &tokens;
    let lengths = lengths(tokens)?;
    let masks = || TokenWeights {
        chosen: tokens.chosen_mask.clone(),
        rejected: tokens.rejected_mask.clone(),
        convergence: None,
    };
    let (lens_c, lens_r) = (&lengths.0[..], &lengths.1[..]);
    match method {
        TokenWeighting::Dpo => Ok(masks()),
        // SimPO: a budget of 1 per response, shared equally (1/|y| per token).
        TokenWeighting::SimPo => Ok(scaled(
            masks(),
            Some(vec![(1.0, 1.0); lens_c.len()]),
            Some((lens_c, lens_r)),
        )),
        TokenWeighting::Uniform { budget } => Ok(scaled(
            masks(),
            budgets(*budget, lens_c, lens_r),
            Some((lens_c, lens_r)),
        )),
        TokenWeighting::SamPo { seed } => Ok(sampo_weights(tokens, &lengths, *seed)),
        TokenWeighting::LdDpo { alpha } => ld_dpo_weights(tokens, &lengths, *alpha),
        TokenWeighting::Otpo(config) => {
            // otpo_token_weights detaches the states itself unless config.gradient asks for
            // gradients to them.
            let (chosen, rejected) = hidden_states(tokens, "Otpo")?;
            otpo_token_weights(
                chosen,
                rejected,
                tokens.chosen_mask.clone(),
                tokens.rejected_mask.clone(),
                config,
            )
        }
        TokenWeighting::Similarity { budget } => similarity_weights(tokens, &lengths, *budget),
        TokenWeighting::ConfPo { length_normalized } => confpo_weights(tokens, *length_normalized),
        TokenWeighting::Given => given_weights(tokens),
    }
}

/// Each pair's chosen and rejected response lengths, after checking that the masks pair up.
fn lengths<B: Backend>(tokens: &ResponseTokens<B>) -> Result<Lengths, OtprefError> {
    let [batch, _] = tokens.chosen_mask.dims();
    let [batch_r, _] = tokens.rejected_mask.dims();
    if batch != batch_r {
        return Err(OtprefError::Shape(format!(
            "chosen_mask has {batch} pairs but rejected_mask has {batch_r}"
        )));
    }
    checks::same_dtype(&[
        ("chosen_mask", tokens.chosen_mask.dtype()),
        ("rejected_mask", tokens.rejected_mask.dtype()),
    ])?;
    Ok((
        checks::lengths("chosen_mask", &tokens.chosen_mask)?,
        checks::lengths("rejected_mask", &tokens.rejected_mask)?,
    ))
}

/// Per pair, the chosen and the rejected response's length.
type Lengths = (Vec<usize>, Vec<usize>);

/// SamPO: each response keeps a random subset of `min(|y_c|, |y_r|)` of its tokens.
fn sampo_weights<B: Backend>(
    tokens: &ResponseTokens<B>,
    (lens_c, lens_r): &Lengths,
    seed: u64,
) -> TokenWeights<B> {
    let pick = |mask: &Tensor<B, 2>, own: &[usize], other: &[usize], salt| {
        let [_, len] = mask.dims();
        let weights: Vec<f64> = host_rows(mask, len)
            .iter()
            .enumerate()
            .flat_map(|(k, row)| {
                let keep = own[k].min(other[k]);
                sample_subset(row, keep, seed.wrapping_add(k as u64) ^ salt)
            })
            .collect();
        like(mask, weights)
    };
    TokenWeights {
        chosen: pick(&tokens.chosen_mask, lens_c, lens_r, 0),
        rejected: pick(&tokens.rejected_mask, lens_r, lens_c, 0x5A5A),
        convergence: None,
    }
}

/// LD-DPO: 1 for the first `min(|y_c|, |y_r|)` tokens of each response, α after.
fn ld_dpo_weights<B: Backend>(
    tokens: &ResponseTokens<B>,
    (lens_c, lens_r): &Lengths,
    alpha: f64,
) -> Result<TokenWeights<B>, OtprefError> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(OtprefError::InvalidParameter(format!(
            "LD-DPO's alpha must lie in [0, 1], got {alpha}"
        )));
    }
    let decay = |mask: &Tensor<B, 2>, own: &[usize], other: &[usize]| {
        let [_, len] = mask.dims();
        let weights: Vec<f64> = host_rows(mask, len)
            .iter()
            .enumerate()
            .flat_map(|(k, row)| {
                let shared = own[k].min(other[k]);
                let mut seen = 0;
                row.iter()
                    .map(|valid| {
                        if *valid == 0.0 {
                            return 0.0;
                        }
                        seen += 1;
                        if seen <= shared {
                            1.0
                        } else {
                            alpha
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        like(mask, weights)
    };
    Ok(TokenWeights {
        chosen: decay(&tokens.chosen_mask, lens_c, lens_r),
        rejected: decay(&tokens.rejected_mask, lens_r, lens_c),
        convergence: None,
    })
}

/// OTPO's similarity ablation: each token's softmax probability of similarity to the other
/// response, scaled to the budget. The weights are constants (no gradient option).
fn similarity_weights<B: Backend>(
    tokens: &ResponseTokens<B>,
    (lens_c, lens_r): &Lengths,
    budget: super::WeightBudget,
) -> Result<TokenWeights<B>, OtprefError> {
    let (chosen, rejected) = hidden_states(tokens, "Similarity")?;
    let (chosen, rejected) = (chosen.detach(), rejected.detach());
    let probabilities = TokenWeights {
        chosen: similarity_softmax(
            chosen.clone(),
            &tokens.chosen_mask,
            rejected.clone(),
            &tokens.rejected_mask,
        ),
        rejected: similarity_softmax(rejected, &tokens.rejected_mask, chosen, &tokens.chosen_mask),
        convergence: None,
    };
    Ok(scaled(probabilities, budgets(budget, lens_c, lens_r), None))
}

/// Multiplies each response's weights by its budget. With `per_token` lengths the budget is
/// first divided by the response length (masks in, equal shares out). `None` budgets:
/// unchanged.
fn scaled<B: Backend>(
    weights: TokenWeights<B>,
    totals: Option<Vec<(f64, f64)>>,
    per_token: Option<(&[usize], &[usize])>,
) -> TokenWeights<B> {
    let Some(mut totals) = totals else {
        return weights;
    };
    if let Some((lens_c, lens_r)) = per_token {
        for (k, (tc, tr)) in totals.iter_mut().enumerate() {
            *tc /= lens_c[k] as f64;
            *tr /= lens_r[k] as f64;
        }
    }
    let (tau_c, tau_r) = budget_tensors(&totals, &weights.chosen);
    TokenWeights {
        chosen: weights.chosen * tau_c,
        rejected: weights.rejected * tau_r,
        convergence: weights.convergence,
    }
}

fn hidden_states<B: Backend>(
    tokens: &ResponseTokens<B>,
    method: &str,
) -> Result<(Tensor<B, 3>, Tensor<B, 3>), OtprefError> {
    match (&tokens.chosen_hidden, &tokens.rejected_hidden) {
        (Some(c), Some(r)) => {
            let [batch, len_c] = tokens.chosen_mask.dims();
            let [_, len_r] = tokens.rejected_mask.dims();
            let [_, _, hidden] = c.dims();
            checks::shape("chosen_hidden", c, [batch, len_c, hidden])?;
            checks::shape("rejected_hidden", r, [batch, len_r, hidden])?;
            checks::same_dtype(&[
                ("chosen_hidden", c.dtype()),
                ("rejected_hidden", r.dtype()),
                ("chosen_mask", tokens.chosen_mask.dtype()),
            ])?;
            checks::finite("chosen_hidden", c)?;
            checks::finite("rejected_hidden", r)?;
            Ok((c.clone(), r.clone()))
        }
        _ => Err(OtprefError::Shape(format!(
            "{method} weights need hidden states: set ResponseTokens::chosen_hidden and \
             rejected_hidden"
        ))),
    }
}

/// Softmax over the valid tokens of `own` of the cosine between each token and the mean valid
/// token of `other`; exactly 0 on masked positions.
fn similarity_softmax<B: Backend>(
    own: Tensor<B, 3>,
    own_mask: &Tensor<B, 2>,
    other: Tensor<B, 3>,
    other_mask: &Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [_, len, _] = own.dims();
    let other_mask3 = other_mask.clone().unsqueeze_dim::<3>(2);
    let mean = (other * other_mask3.clone()).sum_dim(1) / other_mask3.sum_dim(1); // [b, 1, h]
    let dot = own
        .clone()
        .matmul(mean.clone().swap_dims(1, 2))
        .squeeze_dim::<2>(2);
    let norm_own = own
        .square()
        .sum_dim(2)
        .sqrt()
        .squeeze_dim::<2>(2)
        .clamp_min(1e-12);
    let norm_mean = mean
        .square()
        .sum_dim(2)
        .sqrt()
        .squeeze_dim::<2>(2)
        .clamp_min(1e-12);
    let cosine = dot / (norm_own * norm_mean.repeat_dim(1, len));
    let logits = cosine.mask_fill(own_mask.clone().lower_elem(0.5), -1e4);
    softmax(logits, 1) * own_mask.clone()
}

/// 1 on `keep` valid positions of `row` drawn uniformly without replacement, 0 elsewhere.
fn sample_subset(row: &[f64], keep: usize, seed: u64) -> Vec<f64> {
    let mut valid: Vec<usize> = (0..row.len()).filter(|i| row[*i] != 0.0).collect();
    let mut state = seed;
    // Partial Fisher-Yates with SplitMix64: deterministic, no extra dependency.
    for i in 0..keep.min(valid.len()) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let j = i + (z % (valid.len() - i) as u64) as usize;
        valid.swap(i, j);
    }
    let mut out = vec![0.0; row.len()];
    for &i in valid.iter().take(keep) {
        out[i] = 1.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::sample_subset;

    #[test]
    fn subsets_keep_exactly_the_requested_valid_tokens() {
        let row = [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0];
        for seed in 0..50 {
            let picked = sample_subset(&row, 3, seed);
            assert_eq!(picked.iter().sum::<f64>(), 3.0);
            assert!(picked.iter().zip(&row).all(|(p, r)| *p <= *r));
        }
        // Different seeds give different subsets.
        let distinct: std::collections::HashSet<Vec<u64>> = (0..50)
            .map(|s| {
                sample_subset(&row, 2, s)
                    .iter()
                    .map(|v| *v as u64)
                    .collect()
            })
            .collect();
        assert!(distinct.len() > 3);
    }
}
