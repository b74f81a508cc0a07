//! Sampled decoding with the KV cache: temperature, top-k and top-p (nucleus) as
//! `transformers`' `generate` applies them (in that order), seeded and reproducible.
//!
//! Each prompt row draws from its own ChaCha8 stream (`seed`, stream `first_stream + row`), so
//! a row's samples do not depend on which other prompts share its batch: the same seed and
//! stream give the same continuation in any batch.

use burn::tensor::backend::Backend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::causal_lm::CausalLm;
use super::generate::{argmax, decode};

/// How the next token is drawn from the model's distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Divides the logits; 0 is greedy decoding (the most likely token).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens (ties with the k-th kept); 0 keeps all.
    pub top_k: usize,
    /// Keep the most likely tokens until their probability reaches `top_p` (at least one);
    /// 1 keeps all.
    pub top_p: f64,
    /// Seed of the draws.
    pub seed: u64,
}

impl Default for Sampling {
    /// Plain sampling from the model's distribution (`transformers`' `do_sample=True` with
    /// temperature 1, no top-k, no top-p).
    fn default() -> Self {
        Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl Sampling {
    /// A message naming the flag when a setting is out of range.
    pub fn check(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "--temperature must be 0 (greedy) or positive, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("--top-p must lie in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }

    /// The next token from one row of logits over the vocabulary.
    pub fn choose(&self, logits: &[f32], rng: &mut impl Rng) -> u32 {
        if self.temperature == 0.0 {
            return argmax(logits);
        }
        let scaled: Vec<f64> = logits
            .iter()
            .map(|l| f64::from(*l) / self.temperature)
            .collect();
        let kept = self.kept(&scaled);
        let top = kept
            .iter()
            .map(|&i| scaled[i])
            .fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = kept.iter().map(|&i| (scaled[i] - top).exp()).collect();
        let mut u = rng.random::<f64>() * weights.iter().sum::<f64>();
        for (i, w) in kept.iter().zip(&weights) {
            if u < *w {
                return *i as u32;
            }
            u -= w;
        }
        *kept.last().expect("at least one token is kept") as u32
    }

    /// The tokens top-k and then top-p keep, most likely first (every token, in vocabulary
    /// order, when neither filters: no sort of the vocabulary per token).
    fn kept(&self, scaled: &[f64]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..scaled.len()).collect();
        if self.top_k == 0 && self.top_p >= 1.0 {
            return order;
        }
        order.sort_by(|a, b| scaled[*b].total_cmp(&scaled[*a]));
        if self.top_k > 0 && self.top_k < order.len() {
            let kth = scaled[order[self.top_k - 1]];
            order.retain(|i| scaled[*i] >= kth);
        }
        if self.top_p < 1.0 {
            let top = scaled[order[0]];
            let weights: Vec<f64> = order.iter().map(|&i| (scaled[i] - top).exp()).collect();
            let total: f64 = weights.iter().sum();
            // A token stays while the mass ranked above it is below top_p (transformers removes
            // the tail whose cumulative mass, counted from the least likely, is <= 1 - top_p).
            let mut above = 0.0;
            let keep = weights
                .iter()
                .take_while(|w| {
                    let stays = above / total < self.top_p;
                    above += **w;
                    stays
                })
                .count();
            order.truncate(keep.max(1));
        }
        order
    }
}

/// Sampled continuations of `prompts`, up to `max_new_tokens` each, stopping a row at `eos_id`
/// (not returned). Row `r` draws from stream `first_stream + r` of `sampling.seed`; callers
/// that split a long list of prompts into batches pass each batch's first index, so the
/// samples do not depend on the batch size.
pub fn generate_sampled<B: Backend>(
    model: &CausalLm<B>,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    eos_id: u32,
    sampling: &Sampling,
    first_stream: u64,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let mut streams: Vec<ChaCha8Rng> = (0..prompts.len())
        .map(|row| {
            let mut rng = ChaCha8Rng::seed_from_u64(sampling.seed);
            rng.set_stream(first_stream + row as u64);
            rng
        })
        .collect();
    decode(
        model,
        prompts,
        max_new_tokens,
        eos_id,
        device,
        |row, logits| sampling.choose(logits, &mut streams[row]),
    )
}
