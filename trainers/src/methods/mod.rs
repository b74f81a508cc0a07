//! Preference methods as the trainers select them by flag.

mod dpo;

pub use dpo::{DpoLoss, DpoMethod, MethodSettings};
