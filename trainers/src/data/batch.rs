//! Tokenized pairs into padded tensors: chosen and rejected sequences stacked in one batch (one
//! forward pass for both, as TRL's concatenated forward), with the masks the losses need.

use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};

use super::tokenize::TokenizedPair;

/// A batch of `pairs` preference pairs as model inputs. Rows `0..pairs` hold `prompt + chosen`,
/// rows `pairs..2·pairs` hold `prompt + rejected`, right-padded to the longest.
#[derive(Debug, Clone)]
pub struct PairBatch<B: Backend> {
    /// Token ids `[2·pairs, len]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// True on real tokens `[2·pairs, len]`.
    pub attention_mask: Tensor<B, 2, Bool>,
    /// 1 where the next token is a response token, aligned with next-token log-probabilities:
    /// entry `t` scores token `t + 1`. `[2·pairs, len - 1]`.
    pub response_mask: Tensor<B, 2>,
    /// The pairs' margins `[pairs]`, when every pair has one.
    pub margins: Option<Tensor<B, 1>>,
    /// The data's token weights aligned with `response_mask` (entry `t` weighs token `t + 1`;
    /// 0 outside the responses), `[2·pairs, len - 1]`, when every pair has them.
    pub token_weights: Option<Tensor<B, 2>>,
    /// Number of pairs.
    pub pairs: usize,
    /// Number of real (non-padding) tokens in the batch.
    pub num_tokens: usize,
}

/// Collates `pairs` (non-empty), padding with `pad_id` (padding is marked by the masks, so any
/// id works).
pub fn collate_pairs<B: Backend>(
    pairs: &[TokenizedPair],
    pad_id: u32,
    device: &B::Device,
) -> PairBatch<B> {
    // Each row's prompt, response and the data's weights of the response's tokens.
    let chosen = pairs
        .iter()
        .map(|p| (&p.prompt, &p.chosen, &p.chosen_weights));
    let rejected = pairs
        .iter()
        .map(|p| (&p.prompt, &p.rejected, &p.rejected_weights));
    let rows: Vec<_> = chosen.chain(rejected).collect();
    // At least two positions, so that there is one next-token target.
    let len = rows
        .iter()
        .map(|(prompt, response, _)| prompt.len() + response.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let mut ids = Vec::with_capacity(rows.len() * len);
    let mut attention = Vec::with_capacity(rows.len() * len);
    let mut response = Vec::with_capacity(rows.len() * (len - 1));
    // The weights laid out as the response mask, when every row has them.
    let mut token_weights = rows
        .iter()
        .all(|(_, _, w)| w.is_some())
        .then(|| Vec::with_capacity(rows.len() * (len - 1)));
    for (prompt, reply, weights) in &rows {
        let real = prompt.len() + reply.len();
        ids.extend(prompt.iter().chain(reply.iter()).map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(pad_id as i64, len - real));
        attention.extend((0..len).map(|t| t < real));
        // Target position t + 1 is a response token when prompt.len() <= t + 1 < real.
        response.extend((0..len - 1).map(|t| f32::from(t + 1 >= prompt.len() && t + 1 < real)));
        if let (Some(out), Some(weights)) = (token_weights.as_mut(), weights.as_deref()) {
            // Entry t weighs the token at position t + 1: response token t + 1 − prompt.len().
            out.extend((1..len).map(|position| {
                position
                    .checked_sub(prompt.len())
                    .and_then(|token| weights.get(token))
                    .map_or(0.0, |&w| w)
            }));
        }
    }
    let batch = rows.len();
    let margins: Option<Vec<f32>> = pairs.iter().map(|p| p.margin.map(|m| m as f32)).collect();
    PairBatch {
        input_ids: Tensor::from_data(TensorData::new(ids, [batch, len]), device),
        num_tokens: attention.iter().filter(|&&a| a).count(),
        attention_mask: Tensor::from_data(TensorData::new(attention, [batch, len]), device),
        response_mask: Tensor::from_data(TensorData::new(response, [batch, len - 1]), device),
        margins: margins.map(|m| Tensor::from_data(TensorData::new(m, [pairs.len()]), device)),
        token_weights: token_weights
            .map(|w| Tensor::from_data(TensorData::new(w, [batch, len - 1]), device)),
        pairs: pairs.len(),
    }
}

/// The pairs `indices` of `pairs` collated into one batch (a training micro-batch).
pub fn collate_indices<B: Backend>(
    pairs: &[TokenizedPair],
    indices: &[usize],
    pad: u32,
    device: &B::Device,
) -> PairBatch<B> {
    let chosen: Vec<TokenizedPair> = indices.iter().map(|&i| pairs[i].clone()).collect();
    collate_pairs::<B>(&chosen, pad, device)
}
