//! A tiny causal transformer language model and the built-in arithmetic preference data the
//! bundled trainers use. Small enough to train in seconds on a CPU, real enough to exercise
//! every piece of otpref: padding, prompt masks, per-token log-probabilities, hidden states.
#![allow(dead_code)]

use burn::module::Module;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// Characters `0-9 + = <eos> <pad>`.
pub const VOCAB: usize = 14;
pub const PLUS: i64 = 10;
pub const EQUALS: i64 = 11;
pub const EOS: i64 = 12;
pub const PAD: i64 = 13;
pub const MAX_LEN: usize = 16;

#[derive(Module, Debug)]
pub struct TinyLm<B: Backend> {
    tokens: Embedding<B>,
    positions: Embedding<B>,
    encoder: TransformerEncoder<B>,
    norm: LayerNorm<B>,
    head: Linear<B>,
}

/// What one forward pass returns.
pub struct LmOutput<B: Backend> {
    /// Logits `[batch, len, VOCAB]`.
    pub logits: Tensor<B, 3>,
    /// Last hidden state after the final norm `[batch, len, d_model]`.
    pub hidden: Tensor<B, 3>,
}

impl<B: Backend> TinyLm<B> {
    pub fn new(d_model: usize, layers: usize, device: &B::Device) -> Self {
        Self {
            tokens: EmbeddingConfig::new(VOCAB, d_model).init(device),
            positions: EmbeddingConfig::new(MAX_LEN, d_model).init(device),
            encoder: TransformerEncoderConfig::new(d_model, 4 * d_model, 4, layers)
                .with_dropout(0.0)
                .with_norm_first(true)
                .init(device),
            norm: LayerNormConfig::new(d_model).init(device),
            head: LinearConfig::new(d_model, VOCAB).init(device),
        }
    }

    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> LmOutput<B> {
        let [batch, len] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<B, 1, Int>::arange(0..len as i64, &device)
            .unsqueeze::<2>()
            .repeat_dim(0, batch);
        let x = self.tokens.forward(tokens) + self.positions.forward(positions);
        let mask = generate_autoregressive_mask::<B>(batch, len, &device);
        let x = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_attn(mask));
        let hidden = self.norm.forward(x);
        LmOutput {
            logits: self.head.forward(hidden.clone()),
            hidden,
        }
    }
}

/// Log-probability of each next token: position t scores token t+1, `[batch, len - 1]`.
pub fn next_token_logps<B: Backend>(
    logits: Tensor<B, 3>,
    tokens: Tensor<B, 2, Int>,
) -> Tensor<B, 2> {
    let [batch, len, _] = logits.dims();
    let logps = log_softmax(logits.slice([0..batch, 0..len - 1]), 2);
    let targets = tokens.slice([0..batch, 1..len]).unsqueeze_dim::<3>(2);
    logps.gather(2, targets).squeeze_dim(2)
}

/// One preference pair: a prompt like `"27+15="` and two completions (digits, no EOS).
#[derive(Debug, Clone)]
pub struct Pair {
    pub prompt: Vec<i64>,
    pub chosen: Vec<i64>,
    pub rejected: Vec<i64>,
}

fn digits(n: u64) -> Vec<i64> {
    n.to_string().bytes().map(|b| (b - b'0') as i64).collect()
}

/// Small deterministic generator (SplitMix64): the data needs no download and no extra crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The built-in data set: `a+b=` with the right sum as the chosen answer and a near miss
/// (off by 1–10, or with a digit dropped, so lengths differ) as the rejected one.
pub fn arithmetic_pairs(count: usize, seed: u64) -> Vec<Pair> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let (a, b) = (rng.below(100), rng.below(100));
            let mut prompt = digits(a);
            prompt.push(PLUS);
            prompt.extend(digits(b));
            prompt.push(EQUALS);
            let sum = a + b;
            let wrong = match rng.below(3) {
                0 if sum >= 10 => sum / 10,
                _ => sum + 1 + rng.below(10),
            };
            Pair {
                prompt,
                chosen: digits(sum),
                rejected: digits(wrong),
            }
        })
        .collect()
}

/// Token ids `[batch, len]` of `prompt + completion + EOS`, right-padded, and the response
/// mask `[batch, len - 1]` aligned with [`next_token_logps`] (1 where the predicted token is
/// part of the completion or its EOS).
pub fn encode<B: Backend>(
    prompts: &[&[i64]],
    completions: &[&[i64]],
    len: usize,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let batch = prompts.len();
    let mut tokens = vec![PAD; batch * len];
    let mut mask = vec![0.0f32; batch * (len - 1)];
    for (k, (prompt, completion)) in prompts.iter().zip(completions).enumerate() {
        let mut sequence = prompt.to_vec();
        sequence.extend_from_slice(completion);
        sequence.push(EOS);
        assert!(sequence.len() <= len, "sequence longer than {len}");
        for (t, token) in sequence.iter().enumerate() {
            tokens[k * len + t] = *token;
            if t >= prompt.len() {
                mask[k * (len - 1) + t - 1] = 1.0;
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(tokens, [batch, len]), device),
        Tensor::from_data(TensorData::new(mask, [batch, len - 1]), device),
    )
}
