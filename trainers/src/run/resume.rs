//! `--resume` and `--resume auto`: whether a run continues from a checkpoint, and which of its
//! settings a resumed run may change.
//!
//! A resume that finds nothing is an error (a mistyped `--output` must not silently retrain
//! from scratch, as TRL refuses too); `--resume auto` is for requeued jobs that run the same
//! command every time. A resumed run must be the run it continues: settings that change what is
//! trained (model, data, batch, seed, method, steps, …) are compared with the checkpoint's
//! `settings.json` and a difference is an error that names the flag.

use clap::ValueEnum;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::training::{Checkpoints, SETTINGS_FILE};

/// How `--resume` was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResumeMode {
    /// `--resume`: continue from the newest checkpoint; an error when there is none.
    #[value(hide = true)]
    Required,
    /// `--resume auto`: continue when there is a checkpoint, start fresh when there is none.
    Auto,
}

/// Settings that a resumed run may change: where and how often it reports, saves and
/// evaluates, and how it computes (not what). Every other setting must match the checkpoint's.
pub const MAY_CHANGE_ON_RESUME: &[&str] = &[
    "output",
    "device",
    "log_every",
    "eval_every",
    "save_every",
    "save_every_minutes",
    "keep_checkpoints",
    "gradient_checkpointing",
    "merge_adapters",
    "precompute_ref",
    "eval_prompts",
    "max_new_tokens",
    "node_rank",
    "orchestrator",
    "node_address",
    "shard_optimizer",
];

/// Settings of [`MAY_CHANGE_ON_RESUME`] that also shape the answers a run samples for its own
/// preference pairs (`--pairs-from-policy`): such a run must keep them, or a resume that
/// samples (from the reference, or at an iterative round) would train on other pairs.
const SHAPE_SAMPLED_PAIRS: &[&str] = &["max_new_tokens"];

/// Whether a resumed run may change `key`; `samples_pairs`: whether the saved run samples its
/// own pairs.
fn may_change(key: &str, samples_pairs: bool) -> bool {
    MAY_CHANGE_ON_RESUME.contains(&key) && !(samples_pairs && SHAPE_SAMPLED_PAIRS.contains(&key))
}

/// Whether the run resumes: `mode` against the checkpoints there are, the newest one's saved
/// settings checked against `settings` (the run's, as JSON).
pub fn resolve(
    mode: Option<ResumeMode>,
    checkpoints: &Checkpoints,
    settings: &Value,
) -> Result<bool> {
    let Some(mode) = mode else {
        return Ok(false);
    };
    match (checkpoints.latest(), mode) {
        (Some((_, folder)), _) => {
            let saved = folder.join(SETTINGS_FILE);
            // Checkpoints written before settings were saved in them are not checked.
            if saved.is_file() {
                let saved_settings: Value = crate::training::read_json(&saved)?;
                check_unchanged(&saved_settings, settings).map_err(|difference| {
                    Error::Training(format!(
                        "--resume: {difference}; resume with that run's settings (--config {}) \
                         or start a new run in another --output",
                        saved.display()
                    ))
                })?;
            }
            Ok(true)
        }
        (None, ResumeMode::Required) => Err(checkpoints.nothing_to_resume()),
        (None, ResumeMode::Auto) => {
            println!(
                "--resume auto: no checkpoint in {}: starting from step 0",
                checkpoints.dir().display()
            );
            Ok(false)
        }
    }
}

/// The first setting a resumed run may not change (see [`MAY_CHANGE_ON_RESUME`]) whose value
/// differs between the saved run's settings and this run's, as a message naming its flag. Settings the saved run did not
/// have (added to the program since) are not compared.
pub fn check_unchanged(saved: &Value, current: &Value) -> std::result::Result<(), String> {
    let (Some(saved), Some(current)) = (saved.as_object(), current.as_object()) else {
        return Err("the saved settings are not a JSON object".into());
    };
    let samples_pairs = saved
        .get("pairs_from_policy")
        .and_then(Value::as_u64)
        .is_some_and(|k| k > 0);
    for (key, before) in saved {
        if may_change(key, samples_pairs) {
            continue;
        }
        let now = current.get(key).unwrap_or(&Value::Null);
        if !same_setting(now, before) {
            return Err(format!(
                "--{} is {} here but {} in the run being resumed",
                key.replace('_', "-"),
                shown(now),
                shown(before)
            ));
        }
    }
    Ok(())
}

/// Whether two values of a setting are the same. Numbers compare as floats to the last
/// place or two: serde_json's default parser reads some floats back one unit off.
fn same_setting(now: &Value, before: &Value) -> bool {
    match (now.as_f64(), before.as_f64()) {
        (Some(x), Some(y)) if now.is_f64() || before.is_f64() => {
            x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        _ => now == before,
    }
}

/// A setting's value as a user would type it.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "unset".into(),
        Value::String(text) => text.clone(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_changed_batch_is_named_and_a_changed_log_cadence_is_allowed() {
        let saved = json!({"batch_size": 32, "log_every": 10, "model": null});
        let err = check_unchanged(&saved, &json!({"batch_size": 16, "log_every": 10})).unwrap_err();
        assert!(err.starts_with("--batch-size is 16 here but 32"), "{err}");
        let same = json!({"batch_size": 32, "log_every": 1, "model": null});
        assert_eq!(check_unchanged(&saved, &same), Ok(()));
        // One unit in the last place is a read-back, not a change.
        let lr = json!({"lr": 2e-6});
        assert_eq!(
            check_unchanged(&lr, &json!({"lr": 2e-6 * (1.0 + f64::EPSILON)})),
            Ok(())
        );
        assert!(check_unchanged(&lr, &json!({"lr": 3e-6})).is_err());
        let model = json!({"batch_size": 32, "log_every": 10, "model": "m"});
        let err = check_unchanged(&saved, &model).unwrap_err();
        assert!(err.starts_with("--model is m here but unset"), "{err}");
    }

    #[test]
    fn the_answer_length_may_change_unless_the_run_samples_its_pairs() {
        let offline = json!({"pairs_from_policy": 0, "max_new_tokens": 32});
        let longer = json!({"pairs_from_policy": 0, "max_new_tokens": 64});
        assert_eq!(check_unchanged(&offline, &longer), Ok(()));
        let sampled = json!({"pairs_from_policy": 4, "max_new_tokens": 32});
        let longer = json!({"pairs_from_policy": 4, "max_new_tokens": 64});
        let err = check_unchanged(&sampled, &longer).unwrap_err();
        assert!(
            err.starts_with("--max-new-tokens is 64 here but 32"),
            "{err}"
        );
    }
}
