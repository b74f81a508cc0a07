//! What both trainers do the same way: the data, the batch order, the metrics file and the
//! log lines, and Ctrl-C.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::{ElementConversion, Tensor};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Map, Value};

use super::config::CommonConfig;
use crate::data::{read_jsonl, tokenize_dataset, Dataset, LengthLimits, TokenizedPair};
use crate::error::{Error, Result};
use crate::task::{self, SplitMix64, TaskConfig};
use crate::tokenizer::Tokenizer;

/// Training and held-out pairs: the files given, or the built-in task.
pub fn datasets(config: &CommonConfig) -> Result<(Dataset, Dataset)> {
    match &config.data {
        None => {
            let task = TaskConfig::default();
            let train = task::pairs(config.builtin_train_pairs, config.seed, &task);
            // A different seed draws different problems for evaluation.
            let eval = task::pairs(
                config.builtin_eval_pairs,
                config.seed.wrapping_add(1_000_003),
                &task,
            );
            Ok((
                Dataset::from_pairs("built-in task (train)", train),
                Dataset::from_pairs("built-in task (eval)", eval),
            ))
        }
        Some(path) => {
            let train = read_jsonl(path)?;
            match &config.eval_data {
                Some(eval) => Ok((train, read_jsonl(eval)?)),
                None => {
                    let held_out = ((train.len() as f64 * config.eval_share).ceil() as usize)
                        .clamp(1, train.len().saturating_sub(1).max(1));
                    if train.len() < 2 {
                        return Err(Error::invalid(
                            path,
                            "has one pair: give more, or held-out pairs with --eval-data",
                        ));
                    }
                    let split = train.len() - held_out;
                    let eval = Dataset {
                        source: train.source.clone(),
                        pairs: train.pairs[split..].to_vec(),
                        lines: train.lines[split..].to_vec(),
                    };
                    let train = Dataset {
                        source: train.source,
                        pairs: train.pairs[..split].to_vec(),
                        lines: train.lines[..split].to_vec(),
                    };
                    Ok((train, eval))
                }
            }
        }
    }
}

/// Tokenizes a dataset and says what was skipped or truncated.
pub fn tokenize(
    dataset: &Dataset,
    tokenizer: &Tokenizer,
    config: &CommonConfig,
) -> Result<Vec<TokenizedPair>> {
    let limits = LengthLimits {
        max_length: config.max_length,
        max_prompt_length: config.max_prompt_length,
    };
    let (pairs, report) = tokenize_dataset(dataset, tokenizer, limits)?;
    println!("{}: {report}", dataset.source);
    if pairs.is_empty() {
        return Err(Error::invalid(
            Path::new(&dataset.source),
            "no pair fits within --max-length; raise it",
        ));
    }
    Ok(pairs)
}

/// The order in which training pairs are visited: a fresh shuffle every epoch, a pure function
/// of the seed and the position, so a resumed run visits the same batches.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    len: usize,
    seed: u64,
    epoch: usize,
    order: Vec<usize>,
}

impl BatchOrder {
    /// An order over `len` pairs.
    pub fn new(len: usize, seed: u64) -> Self {
        let mut order = Self {
            len,
            seed,
            epoch: usize::MAX,
            order: Vec::new(),
        };
        order.shuffle_for(0);
        order
    }

    fn shuffle_for(&mut self, epoch: usize) {
        if self.epoch != epoch {
            self.order = (0..self.len).collect();
            SplitMix64::new(self.seed ^ (epoch as u64).wrapping_mul(0x2545_F491_4F6C_DD1D))
                .shuffle(&mut self.order);
            self.epoch = epoch;
        }
    }

    /// The indices of micro-batch `index` (of `size` pairs) in the endless sequence of epochs.
    pub fn batch(&mut self, index: usize, size: usize) -> Vec<usize> {
        (index * size..(index + 1) * size)
            .map(|position| {
                self.shuffle_for(position / self.len);
                self.order[position % self.len]
            })
            .collect()
    }
}

/// `metrics.jsonl`: one JSON object per logged step. On resume the records after the
/// checkpoint's step are dropped, so the file reads as one uninterrupted run.
pub struct MetricsLog {
    file: File,
}

impl MetricsLog {
    /// Opens `OUTPUT/metrics.jsonl`, keeping the records up to `resumed_at` (all are dropped
    /// for a fresh run).
    pub fn open(output: &Path, resumed_at: Option<usize>) -> Result<Self> {
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
        Ok(Self { file })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &Map<String, Value>) {
        // A full disk must not stop training; the log line still shows the numbers.
        let _ = writeln!(self.file, "{}", Value::Object(record.clone()));
        let _ = self.file.flush();
    }
}

/// What a run shows while it trains. On a terminal: a bar redrawn every step (step, the
/// latest loss and accuracy, tokens/s, ETA), with the periodic log lines printed above it. Not
/// on a terminal (a log file, CI): the periodic log lines only.
pub struct Progress {
    started: Instant,
    first_step: usize,
    total: usize,
    tokens: usize,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress over steps `first_step..total`.
    pub fn new(first_step: usize, total: usize) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            bar.set_style(
                ProgressStyle::with_template("[{bar:24}] {pos:>5}/{len} {msg} · eta {eta}")
                    .expect("a valid template")
                    .progress_chars("#>."),
            );
            bar.set_position(first_step as u64);
            bar
        });
        Self {
            started: Instant::now(),
            first_step,
            total,
            tokens: 0,
            bar,
        }
    }

    /// Counts the tokens of a processed batch.
    pub fn add_tokens(&mut self, tokens: usize) {
        self.tokens += tokens;
    }

    /// Tokens per second since the start.
    pub fn tokens_per_second(&self) -> f64 {
        self.tokens as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    /// Redraws the bar after `step` (a no-op off a terminal).
    pub fn update(&self, step: usize, label: &str, fields: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64 + 1);
            bar.set_message(format!(
                "{label} {fields} · {:.0} tok/s",
                self.tokens_per_second()
            ));
        }
    }

    /// The periodic log line `step N/total label fields · tok/s · eta`.
    pub fn line(&self, step: usize, label: &str, fields: &str) {
        let done = (step + 1 - self.first_step).max(1) as f64;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = elapsed / done * (self.total - step - 1) as f64;
        self.println(&format!(
            "step {:>5}/{} {label} {fields} · {:.0} tok/s · eta {}",
            step + 1,
            self.total,
            self.tokens_per_second(),
            format_duration(eta)
        ));
    }

    /// Prints a line (above the bar on a terminal).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => println!("{line}"),
        }
    }

    /// Leaves the bar as it is and moves below it.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// `1h02m`, `3m05s`, `12s`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// A flag set by Ctrl-C (SIGINT): the loop saves a checkpoint and stops.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let setter = flag.clone();
    // Failing to install the handler (another one exists) only loses the save-on-Ctrl-C.
    let _ = ctrlc::set_handler(move || {
        if setter.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C while saving: leave at once.
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: saving a checkpoint, then stopping (Ctrl-C again to quit now)");
    });
    flag
}

/// Creates the output folder and writes the run's configuration into it.
pub fn prepare_output<C: serde::Serialize>(output: &Path, config: &C) -> Result<PathBuf> {
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    let path = output.join("config.json");
    super::super::training::write_json(&path, config)?;
    Ok(path)
}

/// The first CUDA device, checked to work: without a usable driver this is a one-line error
/// instead of a panic deep inside the backend.
#[cfg(feature = "cuda")]
pub fn cuda_device() -> Result<burn::backend::cuda::CudaDevice> {
    let device = burn::backend::cuda::CudaDevice::default();
    let probe = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let works = std::panic::catch_unwind(move || {
        let x = burn::tensor::Tensor::<burn::backend::Cuda, 1>::ones([2], &probe);
        x.sum().into_scalar()
    });
    std::panic::set_hook(hook);
    works.map(|_| device).map_err(|_| {
        Error::Training(
            "--device cuda: no usable CUDA device (is the NVIDIA driver installed and a GPU \
             visible?)"
                .into(),
        )
    })
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
