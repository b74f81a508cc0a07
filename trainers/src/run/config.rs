//! Run configuration: one struct per trainer whose every field is a command-line flag (with
//! its default shown by `--help`) and a key of the JSON written to `OUTPUT/config.json`.
//! `--config FILE` reads such a JSON; flags given on the command line override it.

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use super::parallel::ParallelArgs;
use crate::error::{Error, Result as TrainResult};
use crate::hub::is_adapter_folder;
use crate::model::{LoraConfig, LoraTarget};
use crate::training::{HostAdamW, LoopConfig, Phase, Replica, WarmupCosine};

/// Where to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// burn's pure-Rust CPU backend.
    Cpu,
    /// An NVIDIA GPU (the binary must be built with `--features cuda`).
    Cuda,
}

/// LoRA settings (PEFT's `LoraConfig` as flags). `--lora-rank 0` (the default) trains every
/// parameter.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct LoraArgs {
    /// Train LoRA adapters of this rank instead of every parameter (0: full fine-tuning). The
    /// base weights are frozen; the DPO reference is the base with the adapters off.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub lora_rank: usize,
    /// LoRA's alpha: the update is scaled by alpha / rank (PEFT's default 8).
    #[arg(long, default_value_t = 8.0)]
    #[serde(default = "default_lora_alpha")]
    pub lora_alpha: f64,
    /// Dropout on the adapters' inputs while training.
    #[arg(long, default_value_t = 0.0)]
    #[serde(default)]
    pub lora_dropout: f64,
    /// The projections that get adapters, by PEFT's module names, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = LoraTarget::ATTENTION)]
    #[serde(default = "default_lora_targets")]
    pub lora_targets: Vec<LoraTarget>,
    /// Rank-stabilised LoRA: scale by alpha / √rank (PEFT's `use_rslora`).
    #[arg(long)]
    #[serde(default)]
    pub use_rslora: bool,
    /// The dtype the frozen base weights are held in with LoRA (bf16 halves their memory;
    /// the adapters, their optimizer state, the norms and every product stay f32).
    #[arg(long, value_enum, default_value_t = BaseDtype::F32)]
    #[serde(default)]
    pub base_dtype: BaseDtype,
    /// Save the trained model as a full Hugging Face folder with the adapters merged in,
    /// instead of a PEFT adapter folder.
    #[arg(long)]
    #[serde(default)]
    pub merge_adapters: bool,
}

/// The dtype of a LoRA run's frozen base weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaseDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// bfloat16 (exact for a bf16 checkpoint).
    Bf16,
}

impl LoraArgs {
    /// The frozen weights' dtype to cast to, if not f32.
    pub fn frozen_dtype(&self) -> Option<burn::tensor::DType> {
        (self.base_dtype == BaseDtype::Bf16).then_some(burn::tensor::DType::BF16)
    }
}

fn default_adam_epsilon() -> f64 {
    1e-5
}

fn default_shuffle() -> bool {
    true
}

fn default_lora_alpha() -> f64 {
    8.0
}

fn default_lora_targets() -> Vec<LoraTarget> {
    LoraTarget::ATTENTION.to_vec()
}

impl LoraArgs {
    /// The adapters' settings, when `--lora-rank` is set.
    pub fn config(&self) -> Option<LoraConfig> {
        (self.lora_rank > 0).then(|| LoraConfig {
            rank: self.lora_rank,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            use_rslora: self.use_rslora,
            targets: self.lora_targets.clone(),
        })
    }

    fn validate(&self, model: Option<&Path>) -> Result<(), String> {
        let adapter = model.is_some_and(is_adapter_folder);
        if adapter && self.lora_rank > 0 {
            return Err(format!(
                "--model {} is a PEFT adapter folder, whose adapter_config.json sets the LoRA \
                 settings; leave out --lora-rank",
                model.unwrap_or(Path::new("")).display()
            ));
        }
        if self.base_dtype != BaseDtype::F32 && self.lora_rank == 0 && !adapter {
            return Err(
                "--base-dtype bf16 needs LoRA adapters (--lora-rank): full fine-tuning \
                 trains the base weights, in f32"
                    .into(),
            );
        }
        match self.config() {
            Some(config) => config.validate(),
            None if self.merge_adapters && !adapter => {
                Err("--merge-adapters needs LoRA adapters: give --lora-rank".into())
            }
            None => Ok(()),
        }
    }
}

/// Settings both trainers share.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct CommonConfig {
    /// A Hugging Face model folder (config.json, safetensors, tokenizer.json). Without it, a
    /// small Llama with a character tokenizer is built for the built-in task.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training pairs, TRL's preference format as JSON lines. Without it, the built-in task.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Held-out pairs (JSON lines). Without it, --data's last --eval-share is held out.
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    /// Share of --data held out for evaluation when no --eval-data is given.
    #[arg(long, default_value_t = 0.05)]
    pub eval_share: f64,
    /// Output folder: config.json, metrics.jsonl, checkpoints/, the trained model.
    #[arg(long, default_value = "runs/latest")]
    pub output: PathBuf,
    /// cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// Seed of the model's initialisation, the data order and the built-in data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Optimizer steps (of DPO, after any --sft-steps).
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Pairs per micro-batch.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Micro-batches per optimizer step (effective batch = batch_size × grad_accum).
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Share of the steps spent in linear warm-up before the cosine decay.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_ratio: f64,
    /// Final learning rate as a share of --lr.
    #[arg(long, default_value_t = 0.1)]
    pub final_lr_ratio: f64,
    /// AdamW's decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// AdamW's ε (burn's default 1e-5; torch's and TRL's is 1e-8).
    #[arg(long, default_value_t = 1e-5)]
    #[serde(default = "default_adam_epsilon")]
    pub adam_epsilon: f64,
    /// Shuffle the training pairs every epoch (`--shuffle false`: the file's order).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    #[serde(default = "default_shuffle")]
    pub shuffle: bool,
    /// Clip gradients to this global L2 norm over all parameters (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Longest prompt + response in tokens; longer pairs are skipped (and counted).
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Longest prompt in tokens; longer prompts keep their end.
    #[arg(long, default_value_t = 256)]
    pub max_prompt_length: usize,
    /// Built-in task: number of training pairs.
    #[arg(long, default_value_t = 4096)]
    pub builtin_train_pairs: usize,
    /// Built-in task: number of held-out pairs.
    #[arg(long, default_value_t = 256)]
    pub builtin_eval_pairs: usize,
    /// Built-in model: width of the residual stream.
    #[arg(long, default_value_t = 64)]
    pub builtin_hidden: usize,
    /// Built-in model: number of layers.
    #[arg(long, default_value_t = 2)]
    pub builtin_layers: usize,
    /// Log a line (and a metrics.jsonl record) every N steps.
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Evaluate on the held-out pairs every N steps (0: only at the end).
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Save a checkpoint every N steps (0: only on Ctrl-C, SIGTERM and at the end).
    #[arg(long, default_value_t = 100)]
    pub save_every: usize,
    /// Also save a checkpoint at the first step end M minutes after the last one (0: off),
    /// bounding the work a SIGKILL can lose on slow steps.
    #[arg(long, default_value_t = 0.0, value_name = "M")]
    #[serde(default)]
    pub save_every_minutes: f64,
    /// Checkpoints kept (the newest).
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Activation checkpointing: keep only each decoder layer's input in the forward pass and
    /// recompute the layers in the backward pass (less memory, one more forward of the layers).
    #[arg(long)]
    #[serde(default)]
    pub gradient_checkpointing: bool,
    /// LoRA adapters instead of full fine-tuning.
    #[command(flatten)]
    #[serde(flatten)]
    pub lora: LoraArgs,
    /// Data-parallel replicas, on this machine and on several.
    #[command(flatten)]
    #[serde(flatten)]
    pub parallel: ParallelArgs,
}

impl CommonConfig {
    /// Checks every setting; the message says which flag is wrong and what it takes.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("--batch-size", self.batch_size),
            ("--grad-accum", self.grad_accum),
            ("--max-length", self.max_length),
            ("--max-prompt-length", self.max_prompt_length),
            ("--log-every", self.log_every),
            ("--keep-checkpoints", self.keep_checkpoints),
            ("--builtin-hidden", self.builtin_hidden),
            ("--builtin-layers", self.builtin_layers),
        ];
        for (flag, value) in positive {
            if value == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        for (flag, value) in [
            ("--warmup-ratio", self.warmup_ratio),
            ("--final-lr-ratio", self.final_lr_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{flag} must be in [0, 1], got {value}"));
            }
        }
        if !(0.0..1.0).contains(&self.eval_share) {
            return Err(format!(
                "--eval-share must be in [0, 1), got {}",
                self.eval_share
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!(
                "--weight-decay must be 0 or more, got {}",
                self.weight_decay
            ));
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return Err(format!(
                "--adam-epsilon must be positive, got {}",
                self.adam_epsilon
            ));
        }
        if !(0.0..=1e9).contains(&self.save_every_minutes) {
            return Err(format!(
                "--save-every-minutes must be 0 (off) to 1e9, got {}",
                self.save_every_minutes
            ));
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return Err(format!(
                "--max-grad-norm must be 0 (off) or more, got {}",
                self.max_grad_norm
            ));
        }
        if self.max_prompt_length >= self.max_length {
            return Err(format!(
                "--max-prompt-length ({}) must be below --max-length ({}) to leave room for a response",
                self.max_prompt_length, self.max_length
            ));
        }
        if !self.builtin_hidden.is_multiple_of(8) {
            return Err("--builtin-hidden must be a multiple of 8 (4 heads of even width)".into());
        }
        for (flag, path) in [("--data", &self.data), ("--eval-data", &self.eval_data)] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(format!("{flag} {}: no such file", path.display()));
                }
            }
        }
        if let Some(model) = &self.model {
            if !model.is_dir() {
                return Err(format!(
                    "--model {}: no such folder (give a Hugging Face model folder)",
                    model.display()
                ));
            }
        }
        self.lora.validate(self.model.as_deref())?;
        self.parallel.validate(self.device == DeviceKind::Cuda)?;
        if self.device == DeviceKind::Cuda && !cfg!(feature = "cuda") {
            return Err(
                "--device cuda: this program was built without CUDA; rebuild with `--features cuda`"
                    .into(),
            );
        }
        Ok(())
    }
}

impl CommonConfig {
    /// The training loop's settings for a run trained with `lora` adapters (or none).
    pub fn loop_config(&self, lora: Option<&LoraConfig>, replica: &Replica) -> LoopConfig {
        LoopConfig {
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            max_grad_norm: (self.max_grad_norm > 0.0).then_some(self.max_grad_norm),
            log_every: self.log_every,
            eval_every: self.eval_every,
            save_every: self.save_every,
            save_every_time: (self.save_every_minutes > 0.0)
                .then(|| std::time::Duration::from_secs_f64(self.save_every_minutes * 60.0)),
            seed: self.seed,
            shuffle: self.shuffle,
            // Adapter dropout draws inside the step: seeded per step, resume stays exact.
            reseed_every_step: lora.is_some_and(|l| l.dropout > 0.0),
            replica: replica.clone(),
            shard_optimizer: self.parallel.shard_optimizer,
        }
    }

    /// AdamW with the run's weight decay and ε (β 0.9 and 0.999, as torch's), updating in
    /// one pass when `host` (the backend's tensors are host memory).
    pub fn optimizer(&self, host: bool) -> HostAdamW {
        HostAdamW::new(self.weight_decay as f32, self.adam_epsilon as f32, host)
    }

    /// A phase of `steps` steps from step `origin` with peak learning rate `peak`: linear
    /// warm-up over `--warmup-ratio` of it, then cosine decay to `--final-lr-ratio`.
    pub fn phase(&self, origin: usize, steps: usize, peak: f64) -> Phase {
        Phase {
            origin,
            end: origin + steps,
            schedule: WarmupCosine {
                peak,
                warmup_steps: (self.warmup_ratio * steps as f64).ceil() as usize,
                total_steps: steps,
                final_ratio: self.final_lr_ratio,
            },
        }
    }
}

/// Applies `--config FILE` to `from_cli`, the settings parsed from the command line: the
/// file's values first, then every flag given explicitly on the command line. `matches` are
/// the command line's (so that defaults can be told from explicit flags).
pub fn apply_config_file<C: Serialize + DeserializeOwned>(
    matches: &ArgMatches,
    from_cli: C,
    path: &Path,
) -> Result<C, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--config {}: {e}", path.display()))?;
    let mut merged: Value = serde_json::from_str(&text)
        .map_err(|e| format!("--config {}: not valid JSON: {e}", path.display()))?;
    let cli = serde_json::to_value(&from_cli).expect("configurations serialise");
    let (Some(merged_map), Value::Object(cli_map)) = (merged.as_object_mut(), cli) else {
        return Err(format!(
            "--config {}: expected a JSON object",
            path.display()
        ));
    };
    if let Some(unknown) = merged_map.keys().find(|key| !cli_map.contains_key(*key)) {
        return Err(format!(
            "--config {}: unknown setting \"{unknown}\" (see --help for the settings)",
            path.display()
        ));
    }
    // Keys the file leaves out take the command line's values (its defaults); keys given
    // on the command line override the file.
    for (key, value) in cli_map {
        let explicit = matches!(matches.value_source(&key), Some(ValueSource::CommandLine));
        if explicit || !merged_map.contains_key(&key) {
            merged_map.insert(key, value);
        }
    }
    serde_json::from_value(merged).map_err(|e| format!("--config {}: {e}", path.display()))
}

/// Creates the output folder and writes the run's configuration into it.
pub fn prepare_output<C: serde::Serialize>(output: &Path, config: &C) -> TrainResult<PathBuf> {
    std::fs::create_dir_all(output).map_err(|e| Error::io(output, e))?;
    let path = output.join("config.json");
    crate::training::write_json(&path, config)?;
    Ok(path)
}
