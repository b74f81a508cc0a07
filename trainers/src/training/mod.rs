//! The training loop's parts that burn 0.21 does not provide in the form the trainers need.

mod clip;
mod schedule;

pub use clip::clip_global_norm;
pub use schedule::WarmupCosine;
