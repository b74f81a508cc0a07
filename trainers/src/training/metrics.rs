//! `metrics.jsonl` and the per-step metric records written to it.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use burn::tensor::{ElementConversion, Tensor};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// `metrics.jsonl`: one JSON object per logged step. On resume the records after the
/// checkpoint's step are dropped, so the file reads as one uninterrupted run.
pub struct MetricsLog {
    /// `None` on a secondary replica of a data-parallel run (the main one writes the records).
    file: Option<File>,
}

impl MetricsLog {
    /// Opens `OUTPUT/metrics.jsonl`, keeping the records up to `resumed_at` (all are dropped
    /// for a fresh run).
    pub fn open(output: &Path, resumed_at: Option<usize>) -> Result<Self> {
        if !super::speaks() {
            return Ok(Self { file: None });
        }
        let path = output.join("metrics.jsonl");
        let kept: Vec<String> = match (resumed_at, File::open(&path)) {
            (Some(step), Ok(file)) => BufReader::new(file)
                .lines()
                .map_while(std::io::Result::ok)
                .filter(|line| {
                    serde_json::from_str::<Value>(line)
                        .ok()
                        .and_then(|v| v.get("step")?.as_u64())
                        .is_some_and(|s| s as usize <= step)
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        for line in kept {
            writeln!(file, "{line}").map_err(|e| Error::io(&path, e))?;
        }
        Ok(Self { file: Some(file) })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Map<String, Value>) {
        // A full disk must not stop training; the log line still shows the numbers.
        if let Some(file) = &mut self.file {
            let _ = writeln!(file, "{}", Value::Object(record.clone()));
            let _ = file.flush();
        }
    }
}

/// A one-element tensor read back as f64.
pub fn scalar<B: burn::tensor::backend::Backend>(tensor: Tensor<B, 1>) -> f64 {
    tensor.into_scalar().elem::<f64>()
}

/// Adds `value / parts` to each named metric (means over micro-batches).
pub fn add_means(record: &mut Map<String, Value>, metrics: &[(&str, f64)], parts: usize) {
    for (name, value) in metrics {
        let previous = record.get(*name).and_then(Value::as_f64).unwrap_or(0.0);
        record.insert((*name).into(), json!(previous + value / parts as f64));
    }
}

/// A NaN or infinite metric stops the run with an error rather than training on garbage
/// (serde_json records non-finite numbers as null).
pub fn check_finite(record: &Map<String, Value>, step: usize) -> Result<()> {
    match record
        .iter()
        .find(|(_, v)| v.is_null() || v.as_f64().is_some_and(|x| !x.is_finite()))
    {
        Some((name, _)) => Err(Error::Training(format!(
            "step {}: {name} is not finite; lower --lr or --beta, or check the data",
            step + 1
        ))),
        None => Ok(()),
    }
}
