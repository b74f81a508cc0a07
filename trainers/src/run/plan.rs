//! `--plan`'s input for a run: its model (or the built-in one, or an adapter folder's base and
//! settings), batch, the data's longest pair, adapters and checkpointing.

use super::config::CommonConfig;
use super::datasets::{datasets, tokenize};
use super::model_source::{model_and_tokenizer, ModelSource};
use crate::error::Result;
use crate::training::plan::PlanInput;

/// The memory plan's input for this run: its model (or the built-in one), batch, length,
/// adapters and checkpointing. `language_model`: a policy (else a reward model);
/// `reference_copy`: whether full fine-tuning keeps a second copy as the reference.
pub fn plan_input(
    common: &CommonConfig,
    language_model: bool,
    reference_copy: bool,
) -> Result<PlanInput> {
    let (source, tokenizer) = model_and_tokenizer(common)?;
    let (train, _) = datasets(common)?;
    let pairs = tokenize(&train, &tokenizer, common)?;
    // Batches are padded to their longest sequence: the longest pair bounds them all.
    let longest = pairs
        .iter()
        .map(|p| p.prompt.len() + p.chosen.len().max(p.rejected.len()))
        .max()
        .unwrap_or(common.max_length);
    let lora = match &source {
        ModelSource::Adapter { adapter, .. } => Some(adapter.config().clone()),
        _ => common.lora.config(),
    };
    Ok(PlanInput {
        config: source.config().clone(),
        batch_pairs: common.batch_size,
        length: longest.min(common.max_length),
        reference_copy: reference_copy && lora.is_none(),
        lora,
        checkpointing: common.gradient_checkpointing,
        language_model,
        frozen_bytes: if common.lora.frozen_dtype().is_some() {
            2.0
        } else {
            4.0
        },
        devices: 1,
        optimizer_shards: match common.parallel.shard_optimizer {
            true => common.parallel.replicas().first().map_or(1, |r| r.world()),
            false => 1,
        },
    })
}
