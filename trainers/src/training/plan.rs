//! The memory a run needs, predicted before training (`--plan`): parameters, gradients,
//! optimizer state, the DPO reference, activations at the batch and length given, the chunked
//! head's working set, per device; and the largest micro-batch that fits a budget.
//!
//! Activations are counted from what burn's autodiff keeps for the backward pass of one
//! decoder layer, per token (f32 elements):
//!
//! ```text
//! layer(T) = 10·d + 5·I + 1.25·H·T + r·targets
//!   10·d     the two RMSNorms' inputs and outputs, the projections' inputs, q and the
//!            repeated k, v, the output projection's input
//!   5·I      the SwiGLU block: gate, sigmoid(gate), silu, up, their product
//!   1.25·H·T the attention probabilities (and the mask, one byte per score)
//!   r        each adapter's low-rank activation
//! ```
//!
//! with `d` the hidden size, `I` the MLP width, `H` the query heads, `T` the padded length.
//! Without checkpointing every layer's activations are alive at the start of the backward
//! pass; with it, each layer's input (`d` per token) and one layer's activations.

use std::fmt;

use crate::model::{DecoderConfig, LoraConfig, LoraTarget};

/// The chunked head's working set: the logits of one chunk, their log-softmax and, in the
/// backward pass, their gradients (64 MiB each).
const HEAD_BYTES: f64 = 4.0 * 64.0 * 1024.0 * 1024.0;
/// The process itself: code, tokenizer, data, allocator slack (measured on the built-in model).
const PROCESS_BYTES: f64 = 60.0 * 1024.0 * 1024.0;

/// What the plan is for.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// The architecture.
    pub config: DecoderConfig,
    /// Pairs per micro-batch (each is two sequences).
    pub batch_pairs: usize,
    /// The padded sequence length (`--max-length`).
    pub length: usize,
    /// LoRA adapters, or full fine-tuning.
    pub lora: Option<LoraConfig>,
    /// Activation checkpointing.
    pub checkpointing: bool,
    /// Whether a second copy of the model is the reference (full fine-tuning with DPO, without
    /// `--precompute-ref`).
    pub reference_copy: bool,
    /// Whether the model has a language-model head (the policy) or a score head.
    pub language_model: bool,
    /// Bytes per frozen weight (4 for f32, 2 for bf16).
    pub frozen_bytes: f64,
    /// Devices the batch is split over (1 today).
    pub devices: usize,
    /// Replicas the optimizer's state is sharded over (`--shard-optimizer`; 1: not sharded).
    pub optimizer_shards: usize,
}

/// The predicted peak, by part, in bytes per device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryPlan {
    /// All parameters, frozen ones at their dtype.
    pub parameters: f64,
    /// Gradients of the trained parameters (f32).
    pub gradients: f64,
    /// AdamW's two moments per trained parameter (f32).
    pub optimizer: f64,
    /// The DPO reference's own copy (none with LoRA: the base with adapters off).
    pub reference: f64,
    /// Activations kept for the backward pass.
    pub activations: f64,
    /// The chunked head's working set and the process itself.
    pub working_set: f64,
    /// Parameters in all, and trained.
    pub counts: (usize, usize),
}

impl MemoryPlan {
    /// The sum of the parts.
    pub fn total(&self) -> f64 {
        self.parameters
            + self.gradients
            + self.optimizer
            + self.reference
            + self.activations
            + self.working_set
    }
}

/// Parameters of the model (all, trained).
pub fn parameter_counts(input: &PlanInput) -> (usize, usize) {
    let c = &input.config;
    let (d, i) = (c.hidden_size, c.intermediate_size);
    let (q, kv) = (c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim);
    let bias = |on: bool, n: usize| if on { n } else { 0 };
    let per_layer = d * q
        + bias(c.qkv_bias, q)
        + 2 * (d * kv + bias(c.qkv_bias, kv))
        + q * d
        + bias(c.o_bias, d)
        + 3 * d * i
        + bias(c.mlp_bias, 2 * i + d)
        + 2 * d;
    let head = match (input.language_model, c.tie_word_embeddings) {
        (true, false) => c.vocab_size * d,
        (true, true) => 0,
        (false, _) => d,
    };
    let base = c.vocab_size * d + c.num_layers * per_layer + d + head;
    match &input.lora {
        None => (base, base),
        Some(lora) => {
            let adapter = |t: &LoraTarget| {
                let (d_in, d_out) = match t {
                    LoraTarget::QProj => (d, q),
                    LoraTarget::KProj | LoraTarget::VProj => (d, kv),
                    LoraTarget::OProj => (q, d),
                    LoraTarget::GateProj | LoraTarget::UpProj => (d, i),
                    LoraTarget::DownProj => (i, d),
                };
                lora.rank * (d_in + d_out)
            };
            let adapters = c.num_layers * lora.targets.iter().map(adapter).sum::<usize>();
            // The reward model trains its score head beside the adapters.
            let score = if input.language_model { 0 } else { d };
            (base + adapters, adapters + score)
        }
    }
}

/// The predicted peak memory of one training step.
pub fn plan(input: &PlanInput) -> MemoryPlan {
    let c = &input.config;
    let (total, trained) = parameter_counts(input);
    let frozen = (total - trained) as f64;
    let f32 = 4.0;
    let rows = (2 * input.batch_pairs).div_ceil(input.devices.max(1));
    let tokens = (rows * input.length) as f64;
    let (d, i, h, t) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.num_heads as f64,
        input.length as f64,
    );
    let adapters = input
        .lora
        .as_ref()
        .map_or(0.0, |l| (l.rank * l.targets.len()) as f64);
    let layer = 10.0 * d + 5.0 * i + 1.25 * h * t + adapters;
    let layers = c.num_layers as f64;
    let per_token = match input.checkpointing {
        true => layers * d + layer,
        false => layers * layer,
    };
    let head = if input.language_model {
        HEAD_BYTES
    } else {
        0.0
    };
    MemoryPlan {
        parameters: trained as f64 * f32 + frozen * input.frozen_bytes,
        gradients: trained as f64 * f32,
        optimizer: 2.0 * trained as f64 * f32 / input.optimizer_shards.max(1) as f64,
        reference: if input.reference_copy {
            total as f64 * input.frozen_bytes
        } else {
            0.0
        },
        activations: tokens * per_token * f32,
        working_set: head + PROCESS_BYTES,
        counts: (total, trained),
    }
}

/// The largest micro-batch (pairs) whose plan fits `budget` bytes, if any does (up to 4096).
pub fn largest_batch(input: &PlanInput, budget: f64) -> Option<usize> {
    let fits = |batch: usize| {
        let mut at = input.clone();
        at.batch_pairs = batch;
        plan(&at).total() <= budget
    };
    (1..=4096).take_while(|&b| fits(b)).last()
}

/// Bytes as `12.3 GiB` / `456 MiB`.
pub fn human(bytes: f64) -> String {
    let gib = bytes / (1024.0 * 1024.0 * 1024.0);
    match gib >= 1.0 {
        true => format!("{gib:.2} GiB"),
        false => format!("{:.0} MiB", bytes / (1024.0 * 1024.0)),
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (total, trained) = self.counts;
        writeln!(
            f,
            "parameters   {:>10}  ({total} in all, {trained} trained)",
            human(self.parameters)
        )?;
        writeln!(f, "gradients    {:>10}", human(self.gradients))?;
        writeln!(
            f,
            "optimizer    {:>10}  (AdamW, two moments)",
            human(self.optimizer)
        )?;
        writeln!(f, "reference    {:>10}", human(self.reference))?;
        writeln!(f, "activations  {:>10}", human(self.activations))?;
        writeln!(
            f,
            "working set  {:>10}  (chunked head, process)",
            human(self.working_set)
        )?;
        write!(f, "total        {:>10}  per device", human(self.total()))
    }
}
