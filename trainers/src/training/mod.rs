//! The training loop's parts that burn 0.21 does not provide in the form the trainers need.

mod checkpoint;
mod clip;
mod parameters;
mod schedule;

pub use checkpoint::{load_module, read_json, save_module, write_json, Checkpoints, RunState};
pub use clip::clip_global_norm;
pub use parameters::ParameterCounts;
pub use schedule::WarmupCosine;
