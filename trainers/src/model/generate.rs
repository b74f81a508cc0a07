//! Greedy decoding, to read what a policy actually generates (the number a trainer should
//! report beside its losses).

use burn::tensor::{backend::Backend, Bool, Int, Tensor, TensorData};

use super::causal_lm::CausalLm;

/// Greedy continuations of `prompts` (token ids), up to `max_new_tokens` each, stopping a row
/// at `eos_id` (which is not returned). Prompts are left-padded into one batch; every step
/// recomputes the whole sequence (no key/value cache), which suits short answers.
pub fn generate_greedy<B: Backend>(
    model: &CausalLm<B>,
    prompts: &[Vec<u32>],
    max_new_tokens: usize,
    eos_id: u32,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let mut sequences: Vec<Vec<u32>> = prompts.to_vec();
    let mut outputs: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut finished = vec![prompts.is_empty(); prompts.len()];
    for _ in 0..max_new_tokens {
        if finished.iter().all(|&f| f) {
            break;
        }
        let (ids, mask) = left_padded(&sequences, eos_id, device);
        let len = ids.dims()[1];
        let logits = model.forward(ids, mask).logits;
        let [batch, _, vocab] = logits.dims();
        let next = logits
            .slice([0..batch, len - 1..len, 0..vocab])
            .argmax(2)
            .reshape([batch])
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .expect("int data");
        for (row, &token) in next.iter().enumerate() {
            if finished[row] {
                continue;
            }
            let token = token as u32;
            if token == eos_id {
                finished[row] = true;
            } else {
                outputs[row].push(token);
                sequences[row].push(token);
            }
        }
    }
    outputs
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
