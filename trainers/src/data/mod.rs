//! Preference data: TRL's JSON-lines format in, token ids out, padded batches for the model.

mod batch;
mod records;
mod tokenize;

pub use batch::{collate_indices, collate_pairs, PairBatch};
pub use records::{read_jsonl, write_jsonl, Dataset, PreferencePair, Text};
pub use tokenize::{tokenize_dataset, tokenize_pair, LengthLimits, TokenizeReport, TokenizedPair};
