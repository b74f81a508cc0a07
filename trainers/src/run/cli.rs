//! The command line both programs share: the run's settings as flags, plus `--config`,
//! `--resume` and `--write-builtin`; errors as one line on stderr with exit code 2, a run
//! stopped by a signal (its checkpoint saved) with 130 (SIGINT) or 143 (SIGTERM).

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use clap::{Args, Command, FromArgMatches};
use otpref::OtBackend;
use serde::{de::DeserializeOwned, Serialize};

use super::config::{apply_config_file, CommonConfig, DeviceKind};
use super::parallel::train_replicas;
use super::resume::{resolve, ResumeMode};
use crate::data::write_jsonl;
use crate::error::Result;
use crate::task::{self, TaskConfig};
use crate::training::plan::{largest_batch, plan, PlanInput};
use crate::training::{Checkpoints, Replica, StopSignal};

/// Flags of a trainer program that are not settings of the run.
#[derive(Debug, Clone, Args)]
pub struct RunOptions {
    /// A JSON configuration (as written to OUTPUT/config.json); flags given here override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Resume from the newest complete checkpoint in --output (an error when there is none);
    /// `--resume auto`: resume when there is one, start fresh when there is none.
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "required", value_name = "auto")]
    pub resume: Option<ResumeMode>,
    /// Write the built-in task's training pairs to FILE (JSON lines) and exit.
    #[arg(long, value_name = "FILE")]
    pub write_builtin: Option<PathBuf>,
    /// Print the memory the run needs (parameters, gradients, optimizer state, reference,
    /// activations; per device) and exit without training.
    #[arg(long)]
    pub plan: bool,
    /// With --plan: the memory available per device, in GiB; the plan says the largest
    /// --batch-size that fits.
    #[arg(long, value_name = "GIB")]
    pub memory_budget: Option<f64>,
}

/// A trainer's settings, and how to train with them.
pub trait TrainerSettings:
    Args + FromArgMatches + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
    /// The settings both trainers share.
    fn common(&self) -> &CommonConfig;
    /// Checks every setting; the message names the flag.
    fn validate(&self) -> std::result::Result<(), String>;
    /// What the memory plan of this run is computed from.
    fn plan_input(&self) -> Result<PlanInput>;
    /// Trains on backend `B` as `replica` of the run (from the newest checkpoint when
    /// `resume`); returns the signal that stopped the run before its end, if one did.
    fn train<B>(
        &self,
        resume: bool,
        device: &B::Device,
        replica: &Replica,
    ) -> Result<Option<StopSignal>>
    where
        B: AutodiffBackend + OtBackend,
        B::InnerBackend: OtBackend;
}

/// The whole program: parse, check, train; `name` and `about` head `--help`.
pub fn main<S: TrainerSettings>(name: &'static str, about: &'static str) -> ExitCode {
    let command = Command::new(name)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .args_override_self(true)
        .allow_negative_numbers(true);
    let matches = RunOptions::augment_args(S::augment_args(command)).get_matches();
    match run_as_trainers_do(|| run::<S>(&matches)) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(signal)) => ExitCode::from(signal.exit_code()),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs `work` as the trainers run their steps: with glibc keeping freed memory
/// ([`keep_freed_memory`](super::allocator::keep_freed_memory)) and on one of rayon's threads,
/// so that the backend's parallel loops start from inside the pool instead of waking it from
/// outside and sleeping until it is done. For programs that time the trainers' models.
pub fn run_as_trainers_do<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    super::allocator::keep_freed_memory();
    rayon::scope(|_| work())
}

/// Runs the program; returns the signal that stopped the run early, if one did.
fn run<S: TrainerSettings>(
    matches: &clap::ArgMatches,
) -> std::result::Result<Option<StopSignal>, String> {
    let options = RunOptions::from_arg_matches(matches).map_err(|e| e.to_string())?;
    let settings = S::from_arg_matches(matches).map_err(|e| e.to_string())?;
    let settings = match &options.config {
        Some(path) => apply_config_file(matches, settings, path)?,
        None => settings,
    };
    if let Some(path) = &options.write_builtin {
        let common = settings.common();
        let pairs = task::pairs(
            common.builtin_train_pairs,
            common.seed,
            &TaskConfig::default(),
        );
        write_jsonl(path, &pairs).map_err(|e| e.to_string())?;
        println!("wrote {} built-in pairs to {}", pairs.len(), path.display());
        return Ok(None);
    }
    settings.validate()?;
    if options.plan {
        print_plan(&settings, options.memory_budget).map_err(|e| e.to_string())?;
        return Ok(None);
    }
    if options.memory_budget.is_some() {
        return Err("--memory-budget goes with --plan".into());
    }
    let common = settings.common();
    let checkpoints = Checkpoints::new(&common.output, common.keep_checkpoints);
    let as_json = serde_json::to_value(&settings).expect("configurations serialise");
    let resume = resolve(options.resume, &checkpoints, &as_json).map_err(|e| e.to_string())?;
    if let Some(link) = common.parallel.link()? {
        link.start().map_err(|e| e.to_string())?;
    }
    let replicas = common.parallel.replicas();
    let trained = match common.device {
        DeviceKind::Cpu => {
            type B = burn::backend::Autodiff<burn::backend::Flex>;
            // Replicas on the CPU share its one device (each is a thread).
            let devices = vec![Default::default(); replicas.len()];
            let settings = settings.clone();
            train_replicas::<B, _>(replicas, devices, move |replica, device| {
                settings.train::<B>(resume, device, replica)
            })
        }
        DeviceKind::Cuda => train_on_cuda(&settings, resume, replicas),
    };
    trained.map_err(|e| e.to_string())
}

/// `--plan`: the memory plan of the run, and the largest batch that fits a budget.
fn print_plan<S: TrainerSettings>(settings: &S, budget: Option<f64>) -> Result<()> {
    let input = settings.plan_input()?;
    let predicted = plan(&input);
    println!(
        "memory plan: batch {} pairs, length {}, {}{}",
        input.batch_pairs,
        input.length,
        match &input.lora {
            Some(lora) => format!("LoRA r{}", lora.rank),
            None => "full fine-tuning".into(),
        },
        if input.checkpointing {
            ", gradient checkpointing"
        } else {
            ""
        }
    );
    println!("{predicted}");
    if let Some(gib) = budget {
        if !(gib.is_finite() && gib > 0.0) {
            return Err(crate::Error::Training(format!(
                "--memory-budget must be a positive number of GiB, got {gib}"
            )));
        }
        match largest_batch(&input, gib * 1024.0 * 1024.0 * 1024.0) {
            Some(batch) => println!("largest --batch-size within {gib} GiB: {batch}"),
            None => println!("no --batch-size fits within {gib} GiB"),
        }
    }
    Ok(())
}

/// One replica per GPU of `--devices`.
#[cfg(feature = "cuda")]
fn train_on_cuda<S: TrainerSettings>(
    settings: &S,
    resume: bool,
    replicas: Vec<Replica>,
) -> Result<Option<StopSignal>> {
    type B = burn::backend::Autodiff<burn::backend::Cuda>;
    let indices = settings
        .common()
        .parallel
        .device_indices()
        .map_err(crate::Error::Training)?;
    let devices = indices
        .into_iter()
        .map(cuda_device)
        .collect::<Result<Vec<_>>>()?;
    let settings = settings.clone();
    train_replicas::<B, _>(replicas, devices, move |replica, device| {
        settings.train::<B>(resume, device, replica)
    })
}

#[cfg(not(feature = "cuda"))]
fn train_on_cuda<S: TrainerSettings>(
    _: &S,
    _: bool,
    _: Vec<Replica>,
) -> Result<Option<StopSignal>> {
    unreachable!("validate() refuses --device cuda without the cuda feature")
}

/// CUDA device `index`, checked to work: without a usable driver (or with no such GPU) this is
/// a one-line error instead of a panic deep inside the backend.
#[cfg(feature = "cuda")]
pub fn cuda_device(index: usize) -> crate::Result<burn::backend::cuda::CudaDevice> {
    let device = burn::backend::cuda::CudaDevice::new(index);
    let probe = device.clone();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let works = std::panic::catch_unwind(move || {
        let x = burn::tensor::Tensor::<burn::backend::Cuda, 1>::ones([2], &probe);
        x.sum().into_scalar()
    });
    std::panic::set_hook(hook);
    works.map(|_| device).map_err(|_| {
        crate::Error::Training(format!(
            "--device cuda: no usable CUDA device {index} (is the NVIDIA driver installed \
                 and the GPU visible? see --devices)"
        ))
    })
}
