//! The reward model's held-out evaluation: pairwise accuracy with ties counted as ties, and
//! the points of `margins.html` (APLOT's margins against the reward gaps).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use otpref::{aplot_margins, OtBackend};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};

use crate::data::{collate_pairs, TokenizedPair};
use crate::error::Result;
use crate::model::RewardModel;
use crate::training::MetricsLog;

use super::reward_config::RewardConfig;

/// Held-out pairwise accuracy, ties apart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PairwiseAccuracy {
    /// Pairs scored with r_c > r_r.
    pub wins: usize,
    /// Pairs scored with r_c = r_r.
    pub ties: usize,
    /// Pairs scored with r_c < r_r.
    pub losses: usize,
    /// Accuracy on the pairs whose data margin is below the mean margin (the hard ones, e.g.
    /// the built-in task's near misses), when the data has margins.
    pub hard_accuracy: Option<f64>,
    /// Accuracy on the other pairs.
    pub easy_accuracy: Option<f64>,
}

impl PairwiseAccuracy {
    /// wins / pairs.
    pub fn accuracy(&self) -> f64 {
        self.wins as f64 / (self.wins + self.ties + self.losses).max(1) as f64
    }
}

/// (reward gap, APLOT margin) of the first held-out batch, as APLOT would set the margins
/// for the trained model whatever the run's loss.
pub(super) fn margin_points<B: Backend + OtBackend>(
    config: &RewardConfig,
    model: &RewardModel<B>,
    pairs: &[TokenizedPair],
    pad: u32,
    device: &B::Device,
) -> Result<Vec<(f32, f32)>> {
    let pairs = &pairs[..pairs.len().min(config.common.batch_size.max(2))];
    if pairs.len() < 2 {
        return Ok(Vec::new());
    }
    let batch = collate_pairs::<B>(pairs, pad, device);
    let b = batch.pairs;
    let out = model.forward(batch.input_ids, batch.attention_mask);
    let (chosen, rejected) = (
        out.rewards.clone().narrow(0, 0, b),
        out.rewards.narrow(0, b, b),
    );
    let margins = aplot_margins(
        out.pooled.clone().narrow(0, 0, b),
        out.pooled.narrow(0, b, b),
        chosen.clone(),
        rejected.clone(),
        &config.aplot(),
    )?;
    let host = |t: Tensor<B, 1>| t.into_data().convert::<f32>().to_vec::<f32>().expect("f32");
    let gaps = host(chosen - rejected);
    Ok(gaps.into_iter().zip(host(margins)).collect())
}

/// Held-out pairwise accuracy; with margins in the data, split at their mean (hard vs easy).
pub(super) fn accuracy<B: Backend>(
    model: &RewardModel<B>,
    pairs: &[TokenizedPair],
    batch_size: usize,
    pad: u32,
    device: &B::Device,
) -> PairwiseAccuracy {
    let mut result = PairwiseAccuracy::default();
    let mut outcomes = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch_size) {
        let batch = collate_pairs::<B>(chunk, pad, device);
        let b = batch.pairs;
        let rewards = model
            .forward(batch.input_ids, batch.attention_mask)
            .rewards
            .into_data()
            .to_vec::<f32>()
            .expect("f32 rewards");
        for (i, pair) in chunk.iter().enumerate() {
            let gap = rewards[i] - rewards[b + i];
            let won = gap > 0.0;
            match gap.partial_cmp(&0.0) {
                Some(std::cmp::Ordering::Greater) => result.wins += 1,
                Some(std::cmp::Ordering::Less) => result.losses += 1,
                _ => result.ties += 1,
            }
            outcomes.push((pair.margin, won));
        }
    }
    let margins: Vec<f64> = outcomes.iter().filter_map(|(m, _)| *m).collect();
    if margins.len() == outcomes.len() && !margins.is_empty() {
        let mean = margins.iter().sum::<f64>() / margins.len() as f64;
        let share = |hard: bool| {
            let group: Vec<bool> = outcomes
                .iter()
                .filter(|(m, _)| (m.unwrap() < mean) == hard)
                .map(|(_, won)| *won)
                .collect();
            (!group.is_empty())
                .then(|| group.iter().filter(|&&w| w).count() as f64 / group.len() as f64)
        };
        result.hard_accuracy = share(true);
        result.easy_accuracy = share(false);
    }
    result
}

/// Writes the held-out record and returns its log line.
pub(super) fn log_accuracy(
    metrics: &mut MetricsLog,
    step: usize,
    accuracy: &PairwiseAccuracy,
) -> String {
    let mut record = Map::new();
    record.insert("step".into(), json!(step));
    record.insert("eval/accuracy".into(), json!(accuracy.accuracy()));
    let total = (accuracy.wins + accuracy.ties + accuracy.losses).max(1) as f64;
    record.insert("eval/ties".into(), json!(accuracy.ties as f64 / total));
    if let (Some(hard), Some(easy)) = (accuracy.hard_accuracy, accuracy.easy_accuracy) {
        record.insert("eval/accuracy_hard".into(), json!(hard));
        record.insert("eval/accuracy_easy".into(), json!(easy));
    }
    metrics.write(&record);
    format!(
        "held-out accuracy: {:.3} ({} wins, {} ties, {} losses)",
        accuracy.accuracy(),
        accuracy.wins,
        accuracy.ties,
        accuracy.losses
    )
}
