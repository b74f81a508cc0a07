//! A reward model's scores of sampled answers: the ranking behind best-of-n and behind
//! on-policy pairs scored by a reward model.

use burn::tensor::backend::Backend;

use super::samples::as_response;
use crate::data::{collate_pairs, tokenize_pair, PreferencePair, Text, TokenizedPair};
use crate::error::Result;
use crate::model::RewardModel;
use crate::tokenizer::Tokenizer;

/// Answers scored in one forward pass.
const ANSWERS_PER_BATCH: usize = 64;

/// The reward of each `(prompt, answer)`, tokenized as the reward trainer tokenizes a
/// response (the answer, then EOS) and read at the last real token.
pub fn reward_scores<B: Backend>(
    model: &RewardModel<B>,
    items: &[(&Text, &str)],
    tokenizer: &Tokenizer,
    device: &B::Device,
) -> Result<Vec<f32>> {
    let mut scores = Vec::with_capacity(items.len());
    for chunk in items.chunks(ANSWERS_PER_BATCH) {
        // Two answers per collated pair, as whole sequences (the reward is read at the last
        // real token, so where the prompt ends does not matter): one forward pass scores both
        // halves; the last answer goes twice when their number is odd.
        let sequences = chunk
            .iter()
            .map(|&(prompt, answer)| whole_sequence(prompt, answer, tokenizer))
            .collect::<Result<Vec<_>>>()?;
        let pairs: Vec<TokenizedPair> = sequences
            .chunks(2)
            .map(|two| TokenizedPair {
                prompt: Vec::new(),
                chosen: two[0].clone(),
                rejected: two.get(1).unwrap_or(&two[0]).clone(),
                margin: None,
                chosen_weights: None,
                rejected_weights: None,
            })
            .collect();
        let batch = collate_pairs::<B>(&pairs, tokenizer.pad_id(), device);
        let rewards = model
            .forward(batch.input_ids, batch.attention_mask)
            .rewards
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 rewards");
        let half = pairs.len();
        for (i, _) in chunk.iter().enumerate() {
            scores.push(rewards[(i % 2) * half + i / 2]);
        }
    }
    Ok(scores)
}

/// The ids of `prompt` followed by `answer` as a response.
fn whole_sequence(prompt: &Text, answer: &str, tokenizer: &Tokenizer) -> Result<Vec<u32>> {
    let response = as_response(prompt, answer);
    let pair = tokenize_pair(
        &PreferencePair {
            prompt: prompt.clone(),
            chosen: response.clone(),
            rejected: response,
            margin: None,
            chosen_weights: None,
            rejected_weights: None,
        },
        tokenizer,
    )?;
    Ok([pair.prompt, pair.chosen].concat())
}
