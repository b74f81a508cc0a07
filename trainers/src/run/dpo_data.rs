//! What the DPO trainer reads before training: its model source, tokenizer and pairs.

use super::config::prepare_output;
use super::datasets::{datasets, tokenize};
use super::dpo_config::DpoConfig;
use super::model_source::{model_and_tokenizer, ModelSource};
use super::policy_pairs::check_scorable;
use crate::data::{Dataset, TokenizedPair};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// What a run reads before training: the model source, its tokenizer, the data.
pub(super) struct Prepared {
    pub(super) source: ModelSource,
    pub(super) tokenizer: Tokenizer,
    pub(super) train: Dataset,
    pub(super) eval: Dataset,
    pub(super) train_pairs: Vec<TokenizedPair>,
    pub(super) eval_pairs: Vec<TokenizedPair>,
}

impl Prepared {
    pub(super) fn read(config: &DpoConfig) -> Result<Self> {
        let common = &config.common;
        let (source, tokenizer) = model_and_tokenizer(common)?;
        let (train, eval) = datasets(common)?;
        check_scorable(&config.policy, &train)?;
        if config.method.needs_given_weights() {
            check_token_weights(&train)?;
            check_token_weights(&eval)?;
        }
        let train_pairs = tokenize(&train, &tokenizer, common)?;
        let eval_pairs = tokenize(&eval, &tokenizer, common)?;
        if crate::training::speaks() {
            prepare_output(&common.output, config)?;
        }
        Ok(Self {
            source,
            tokenizer,
            train,
            eval,
            train_pairs,
            eval_pairs,
        })
    }
}

/// `--method given`'s requirement: every pair of `data` carries both responses' token weights.
/// (Their lengths are checked against the tokens when the pairs are tokenized.)
fn check_token_weights(data: &Dataset) -> Result<()> {
    for (i, pair) in data.pairs.iter().enumerate() {
        let fields = [
            ("chosen_weights", &pair.chosen_weights),
            ("rejected_weights", &pair.rejected_weights),
        ];
        if let Some((field, _)) = fields.iter().find(|(_, weights)| weights.is_none()) {
            return Err(Error::Training(format!(
                "--method given reads each pair's \"chosen_weights\" and \"rejected_weights\" \
                 (one weight per response token), and {} has no \"{field}\"",
                data.locate(i)
            )));
        }
    }
    Ok(())
}
