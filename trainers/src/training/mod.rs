//! The training loop ([`Trainer`], one for every method and phase) and its parts that burn
//! 0.21 does not provide in the form the trainers need.

mod adamw;
mod checkpoint;
mod clip;
mod data_parallel;
mod interrupt;
mod metrics;
mod nodes;
mod order;
mod parameters;
pub mod plan;
mod progress;
mod schedule;
mod sharded;
mod trainer;

pub use adamw::HostAdamW;
pub use checkpoint::{
    load_module, read_json, save_module, write_json, Checkpoints, RunState, SETTINGS_FILE,
};
pub use clip::clip_global_norm;
pub use data_parallel::{drawn, one_at_a_time, speaks, Replica};
pub use interrupt::{stop_requests, StopRequests, StopSignal};
pub use metrics::{add_means, check_finite, scalar, MetricsLog};
pub use nodes::{Endpoint, NodeLink};
pub use order::BatchOrder;
pub use parameters::ParameterCounts;
pub use progress::{format_duration, Progress};
pub use schedule::WarmupCosine;
pub use sharded::{OptimizerRecord, OptimizerShards, TrainerOptimizer};
pub use trainer::{Fitted, LoopConfig, Method, MicroStep, Phase, Trainer};
