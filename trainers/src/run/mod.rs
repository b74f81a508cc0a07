//! The trainer programs' bodies; `src/bin/*` only parse the command line and call in.

pub mod allocator;
pub mod best_of_n;
pub mod cli;
pub mod config;
pub mod curves;
pub mod datasets;
pub mod dpo;
mod dpo_config;
mod dpo_data;
pub mod dpo_eval;
mod dpo_phases;
mod dpo_rounds;
pub mod model_source;
pub mod parallel;
pub mod plan;
pub mod policy_pairs;
pub mod report;
pub mod resume;
pub mod reward;
mod reward_config;
mod reward_eval;
mod reward_phase;
pub mod reward_scores;
pub mod samples;

pub use config::{apply_config_file, CommonConfig, DeviceKind};
pub use dpo::{DpoConfig, DpoSummary};
pub use reward::{RewardConfig, RewardLoss, RewardSummary};
