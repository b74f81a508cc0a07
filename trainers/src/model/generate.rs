//! Greedy decoding, to read what a policy actually generates (the number a trainer should
//! report beside its losses), and the decoding loop that sampling shares.

use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};

use super::causal_lm::CausalLm;

/// Greedy continuations of `prompts` (token ids), up to `max_new_tokens` each, stopping a row
/// at `eos_id` (which is not returned). Prompts are left-padded into one batch; after the
/// prompts, each step feeds only the new tokens and reuses the keys and values of the earlier
/// positions (a [`DecoderCache`](super::DecoderCache)).
pub fn generate_greedy<B: Backend>(
    model: &CausalLm<B>,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    eos_id: u32,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    decode(
        model,
        prompts,
        max_new_tokens,
        eos_id,
        device,
        |_, logits| argmax(logits),
    )
}

/// The decoding loop shared by greedy decoding and sampling: `choose(row, logits)` picks the
/// next token of batch row `row` from its last position's logits over the vocabulary.
pub(crate) fn decode<B: Backend>(
    model: &CausalLm<B>,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    eos_id: u32,
    device: &B::Device,
    mut choose: impl FnMut(usize, &[f32]) -> u32,
) -> Vec<Vec<u32>> {
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    if prompts.is_empty() || max_new_tokens == 0 {
        return outputs;
    }
    let batch = prompts.len();
    let mut finished = vec![false; batch];
    let mut cache = model.model.empty_cache();
    let head = decoding_head(model);
    let (mut ids, mut mask) = left_padded(prompts, eos_id, device);
    for _ in 0..max_new_tokens {
        let hidden = model.model.forward_cached(ids, mask.clone(), &mut cache);
        let [_, len, width] = hidden.dims();
        // Logits of the last position only: the prompt's other positions choose nothing.
        let last_hidden = hidden.slice([0..batch, len - 1..len, 0..width]);
        let vocab = head.dims()[1];
        let last = last_hidden
            .reshape([batch, width])
            .matmul(head.clone())
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("float logits");
        let next: Vec<u32> = last
            .chunks(vocab)
            .enumerate()
            .map(|(row, logits)| choose(row, logits))
            .collect();
        for (row, &token) in next.iter().enumerate() {
            if finished[row] {
                continue;
            }
            if token == eos_id {
                finished[row] = true;
            } else {
                outputs[row].push(token);
            }
        }
        if finished.iter().all(|&f| f) {
            break;
        }
        // Finished rows keep decoding (rows do not see each other); their tokens are dropped.
        let next: Vec<i64> = next.into_iter().map(i64::from).collect();
        ids = Tensor::from_data(TensorData::new(next, [batch, 1]), device);
        let real = Tensor::from_data(TensorData::new(vec![true; batch], [batch, 1]), device);
        mask = Tensor::cat(vec![mask, real], 1);
    }
    outputs
}

/// The output head `[hidden, vocab]` laid out for decoding's few-row products. A tied head is
/// the transpose of the embedding matrix: read through that view, every decoding step's product
/// first repacks the whole matrix, so it is copied once into its own row-major storage (vocab ×
/// hidden more memory while decoding: 113 MB at 135M parameters). An untied head already is
/// (burn's `Linear` layout).
fn decoding_head<B: Backend>(model: &CausalLm<B>) -> Tensor<B, 2> {
    let weight = model.head_weight();
    if model.lm_head.is_some() {
        return weight;
    }
    let device = weight.device();
    Tensor::from_data(weight.into_data(), &device)
}

/// The index of the largest value, the first one on ties (as `torch.argmax`).
pub(crate) fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// `sequences` left-padded with `pad_id` into `[batch, longest]` ids and mask.
pub fn left_padded<B: Backend>(
    sequences: &[Vec<u32>],
    pad_id: u32,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Bool>) {
    let len = sequences.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let batch = sequences.len();
    let mut ids = Vec::with_capacity(batch * len);
    let mut mask = Vec::with_capacity(batch * len);
    for seq in sequences {
        let pad = len - seq.len();
        ids.extend(std::iter::repeat_n(pad_id as i64, pad));
        ids.extend(seq.iter().map(|&t| t as i64));
        mask.extend(std::iter::repeat_n(false, pad));
        mask.extend(std::iter::repeat_n(true, seq.len()));
    }
    (
        Tensor::from_data(TensorData::new(ids, [batch, len]), device),
        Tensor::from_data(TensorData::new(mask, [batch, len]), device),
    )
}
