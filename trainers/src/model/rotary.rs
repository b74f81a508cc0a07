//! Rotary position embeddings in Hugging Face's rotate-half layout.
//!
//! Hugging Face Llama-family checkpoints pair dimension `i` with `i + head_dim/2` (rotate-half),
//! whereas burn's `RotaryEncoding` pairs neighbours `2i, 2i+1`. Implementing rotate-half here
//! lets checkpoints load without permuting the q/k projection rows.

use std::ops::Range;

use burn::tensor::{backend::Backend, Tensor};

/// `cos` and `sin` of a range of positions' angles, `[1, len, 1, head_dim]`, in the
/// activations' dtype.
#[derive(Debug, Clone)]
pub struct RotaryTables<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
}

impl<B: Backend> RotaryTables<B> {
    /// Tables for `positions` (`0..len` for a whole sequence; later positions when decoding
    /// with a cache). Offsets cancel in the attention scores (they depend on `i - j` only), so
    /// left padding needs no position shift.
    pub fn new(inverse_frequencies: &[f32], positions: Range<usize>, like: &Tensor<B, 3>) -> Self {
        let device = like.device();
        let half = inverse_frequencies.len();
        let len = positions.len();
        let positions = Tensor::<B, 1, burn::tensor::Int>::arange(
            positions.start as i64..positions.end as i64,
            &device,
        )
        .float()
        .reshape([len, 1]);
        let frequencies =
            Tensor::<B, 1>::from_floats(inverse_frequencies, &device).reshape([1, half]);
        // Angles computed in f32 (as transformers does), then cast to the activations' dtype.
        let angles = positions * frequencies;
        let angles = Tensor::cat(vec![angles.clone(), angles], 1).reshape([1, len, 1, 2 * half]);
        let dtype = like.dtype();
        Self {
            cos: angles.clone().cos().cast(dtype),
            sin: angles.sin().cast(dtype),
        }
    }

    /// Rotates queries or keys `[batch, len, heads, head_dim]` (the projection's output split
    /// into heads, before the heads move ahead of the positions: contiguous, so the products
    /// with the broadcast tables run without strided iteration):
    /// `x·cos + rotate_half(x)·sin` with `rotate_half([x1, x2]) = [-x2, x1]`.
    pub fn apply(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [batch, len, heads, dim] = x.dims();
        let first = x.clone().slice([0..batch, 0..len, 0..heads, 0..dim / 2]);
        let second = x.clone().slice([0..batch, 0..len, 0..heads, dim / 2..dim]);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        // Tables laid out as one batch row of `x` (repeated over the heads), so that the
        // products broadcast over the batch only: burn-flex's fast path for a row shared by
        // every outer position (a table broadcast over the heads iterates element by element).
        let width = len * heads * dim;
        let row = |table: &Tensor<B, 4>| table.clone().repeat_dim(2, heads).reshape([1, width]);
        let flat = |t: Tensor<B, 4>| t.reshape([batch, width]);
        (flat(x) * row(&self.cos) + flat(rotated) * row(&self.sin))
            .reshape([batch, len, heads, dim])
    }
}
