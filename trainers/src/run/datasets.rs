//! The data a run trains and evaluates on: the files given (with a held-out share split off)
//! or the built-in task, tokenized within the length limits.

use std::path::Path;

use super::config::CommonConfig;
use crate::data::{read_jsonl, tokenize_dataset, Dataset, LengthLimits, TokenizedPair};
use crate::error::{Error, Result};
use crate::task::{self, TaskConfig};
use crate::tokenizer::Tokenizer;

/// Training and held-out pairs: the files given, or the built-in task.
pub fn datasets(config: &CommonConfig) -> Result<(Dataset, Dataset)> {
    match &config.data {
        None => {
            let task = TaskConfig::default();
            let train = task::pairs(config.builtin_train_pairs, config.seed, &task);
            // A different seed draws different problems for evaluation.
            let eval = task::pairs(
                config.builtin_eval_pairs,
                config.seed.wrapping_add(1_000_003),
                &task,
            );
            Ok((
                Dataset::from_pairs("built-in task (train)", train),
                Dataset::from_pairs("built-in task (eval)", eval),
            ))
        }
        Some(path) => {
            let train = read_jsonl(path)?;
            match &config.eval_data {
                Some(eval) => Ok((train, read_jsonl(eval)?)),
                None => {
                    let held_out = ((train.len() as f64 * config.eval_share).ceil() as usize)
                        .clamp(1, train.len().saturating_sub(1).max(1));
                    if train.len() < 2 {
                        return Err(Error::invalid(
                            path,
                            "has one pair: give more, or held-out pairs with --eval-data",
                        ));
                    }
                    let split = train.len() - held_out;
                    let eval = Dataset {
                        source: train.source.clone(),
                        pairs: train.pairs[split..].to_vec(),
                        lines: train.lines[split..].to_vec(),
                    };
                    let train = Dataset {
                        source: train.source,
                        pairs: train.pairs[..split].to_vec(),
                        lines: train.lines[..split].to_vec(),
                    };
                    Ok((train, eval))
                }
            }
        }
    }
}

/// Tokenizes a dataset and says what was skipped or truncated.
pub fn tokenize(
    dataset: &Dataset,
    tokenizer: &Tokenizer,
    config: &CommonConfig,
) -> Result<Vec<TokenizedPair>> {
    let limits = LengthLimits {
        max_length: config.max_length,
        max_prompt_length: config.max_prompt_length,
    };
    let (pairs, report) = tokenize_dataset(dataset, tokenizer, limits)?;
    crate::say!("{}: {report}", dataset.source);
    if pairs.is_empty() {
        return Err(Error::invalid(
            Path::new(&dataset.source),
            "no pair fits within --max-length; raise it",
        ));
    }
    Ok(pairs)
}
