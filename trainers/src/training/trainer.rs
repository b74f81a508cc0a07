//! The one training loop both trainers run: micro-batches and gradient accumulation, the
//! finite-metrics check, global-norm clipping, the learning-rate schedule, the optimizer step,
//! log lines and metric records, evaluation cadence, checkpoints (every N steps or minutes),
//! and stop requests (Ctrl-C, SIGTERM).
//!
//! What varies between SFT, the DPO family and the reward model is a [`Method`]: the loss of
//! one micro-batch and the held-out evaluation, as burn-train's `TrainStep`/`ValidStep` and
//! TRL's `compute_loss`/`evaluate` split it. A program with several phases (SFT, then DPO)
//! calls [`Trainer::fit`] once per phase; steps are numbered across phases, so checkpoints,
//! metrics and the progress bar read as one run.

use std::time::{Duration, Instant};

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use serde_json::{json, Map};

use super::checkpoint::{Checkpoints, RunState};
use super::clip::clip_global_norm;
use super::data_parallel::Replica;
use super::interrupt::{stop_requests, StopRequests, StopSignal};
use super::metrics::{add_means, check_finite, MetricsLog};
use super::order::BatchOrder;
use super::progress::Progress;
use super::schedule::WarmupCosine;
use super::sharded::{OptimizerShards, TrainerOptimizer};
use crate::error::Result;

/// The loss of one micro-batch, as a method computes it.
pub struct MicroStep<B: AutodiffBackend> {
    /// The loss to differentiate (its mean over the micro-batch).
    pub loss: Tensor<B, 1>,
    /// Metrics of the micro-batch (averaged over the step's micro-batches when logged).
    pub metrics: Vec<(&'static str, f64)>,
    /// Real tokens in the micro-batch.
    pub tokens: usize,
}

/// What a training method supplies to the loop.
pub trait Method<B: AutodiffBackend> {
    /// The model it trains.
    type Model: AutodiffModule<B>;

    /// The phase's name in log lines and in the records' `phase`.
    fn phase(&self) -> &'static str;

    /// The loss of the micro-batch of training pairs `indices` at optimizer step `step`.
    fn loss(&mut self, model: &Self::Model, indices: &[usize], step: usize)
        -> Result<MicroStep<B>>;

    /// How many items the loss of micro-batch `indices` averages over, when that number
    /// varies between micro-batches (SFT: response tokens). The loop then weighs each
    /// micro-batch by its items' share of the step's, over every micro-batch and replica, so
    /// that a step's loss is the mean over all of its items however `--grad-accum` and
    /// `--devices` split it (transformers' `num_items_in_batch`). `None` (the default): the
    /// loss is a mean over pairs and the micro-batches' means are averaged.
    fn loss_items(&self, _indices: &[usize]) -> Option<usize> {
        None
    }

    /// The parameters' gradients of a micro-batch's loss (a model that recomputes
    /// checkpointed activations overrides this).
    fn backward(&self, model: &Self::Model, loss: Tensor<B, 1>) -> GradientsParams {
        GradientsParams::from_grads(loss.backward(), model)
    }

    /// The metrics shown on the progress bar and in log lines.
    fn shown(&self) -> &'static [&'static str] {
        &["loss"]
    }

    /// Metrics added to every logged record, given the time the phase's steps took so far
    /// (e.g. the share of it spent in optimal transport).
    fn timing_metrics(&self, _step_time: Duration) -> Vec<(&'static str, f64)> {
        Vec::new()
    }

    /// Evaluates `model` on held-out data after step `step` (its records written to `metrics`);
    /// returns the log line, or `None` when the phase has no evaluation.
    fn evaluate(
        &mut self,
        _model: &Self::Model,
        _step: usize,
        _metrics: &mut MetricsLog,
    ) -> Result<Option<String>> {
        Ok(None)
    }
}

/// The loop's settings (the command line's, for the bundled trainers).
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// Pairs per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Clip to this global gradient norm (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// A log line and a record every N steps (and at each phase's end).
    pub log_every: usize,
    /// Evaluate every N steps of a phase (0: only when the program does at the end).
    pub eval_every: usize,
    /// A checkpoint every N steps (0: only on a stop request and at the run's end).
    pub save_every: usize,
    /// Also a checkpoint at the first step end this long after the last one (or the start).
    pub save_every_time: Option<Duration>,
    /// The run's seed (data order; per-step random streams).
    pub seed: u64,
    /// Shuffle the pairs every epoch (off: the file's order, as for a step-by-step comparison).
    pub shuffle: bool,
    /// Reseed the backend at every step from the seed and the step, so that random draws
    /// inside a step (adapter dropout) replay exactly on resume.
    pub reseed_every_step: bool,
    /// This process's place in a data-parallel run ([`Replica::single`] on one device):
    /// `batch_size` is per replica, a micro-batch of the run is `batch_size × world` pairs.
    pub replica: Replica,
    /// Shard the optimizer's state across the replicas (ZeRO-1, [`OptimizerShards`]).
    pub shard_optimizer: bool,
}

/// One phase of a run: steps `origin..end` of the run, with its schedule counted from
/// `origin` (its evaluation cadence too).
#[derive(Debug, Clone)]
pub struct Phase {
    /// The phase's first step in the run.
    pub origin: usize,
    /// The step after its last.
    pub end: usize,
    /// The learning rate at each step of the phase.
    pub schedule: WarmupCosine,
}

/// What [`Trainer::fit`] returns: the model and the trainers' optimizer.
type FittedWith<M, B> = Fitted<M, TrainerOptimizer<M, B>>;

/// A model and optimizer after a fit, and the signal that stopped it before the run's end.
pub struct Fitted<M, O> {
    /// The trained model.
    pub model: M,
    /// The optimizer, with its state.
    pub optimizer: O,
    /// The signal that stopped the run early, after a checkpoint was saved to resume from.
    pub stopped: Option<StopSignal>,
    /// The time this fit's steps took.
    pub step_time: Duration,
}

/// The training loop of one run (all of its phases).
pub struct Trainer {
    config: LoopConfig,
    order: BatchOrder,
    checkpoints: Checkpoints,
    metrics: MetricsLog,
    progress: Progress,
    stops: StopRequests,
    last_save: Instant,
    state: RunState,
    total: usize,
}

impl Trainer {
    /// A loop over `total` steps on `train_len` pairs, starting from `state` (step 0 for a
    /// fresh run, the checkpoint's for a resumed one), writing to `checkpoints` and `metrics`.
    pub fn new(
        config: LoopConfig,
        train_len: usize,
        checkpoints: Checkpoints,
        metrics: MetricsLog,
        state: RunState,
        total: usize,
    ) -> Self {
        let stops = stop_requests();
        stops.clear();
        Self {
            order: BatchOrder::new(train_len, config.shuffle.then_some(config.seed)),
            progress: Progress::new(state.step, total),
            stops,
            last_save: Instant::now(),
            config,
            checkpoints,
            metrics,
            state,
            total,
        }
    }

    /// Visits `train_len` pairs from here on (a phase that trains on other pairs than the
    /// last, such as DPO on pairs sampled after SFT); the order stays a function of the seed
    /// and the step, so a resumed run visits the same batches.
    pub fn set_train_len(&mut self, train_len: usize) {
        self.order = BatchOrder::new(train_len, self.config.shuffle.then_some(self.config.seed));
    }

    /// The next step to run (the run's progress so far).
    pub fn next_step(&self) -> usize {
        self.state.step
    }

    /// The metrics file, for a program's own records (final evaluations).
    pub fn metrics(&mut self) -> &mut MetricsLog {
        &mut self.metrics
    }

    /// Prints a line above the progress bar.
    pub fn println(&self, line: &str) {
        self.progress.println(line);
    }

    /// Closes the progress bar.
    pub fn finish(&self) {
        self.progress.finish();
    }

    /// Trains `model` with `method` over the steps of `phase` that are still to run.
    pub fn fit<B, M>(
        &mut self,
        method: &mut M,
        mut model: M::Model,
        optimizer: TrainerOptimizer<M::Model, B>,
        phase: &Phase,
        device: &B::Device,
    ) -> Result<FittedWith<M::Model, B>>
    where
        B: AutodiffBackend,
        M: Method<B>,
    {
        self.check_same_step::<B::InnerBackend>(device)?;
        let shards =
            OptimizerShards::new(&model, &self.config.replica, self.config.shard_optimizer);
        let mut optimizer = shards.keep_owned(optimizer);
        if let Some(line) = shards.summary() {
            self.progress.println(&line);
        }
        let mut step_time = Duration::ZERO;
        for step in self.state.step.max(phase.origin)..phase.end {
            let started = Instant::now();
            let lr = phase.schedule.at(step - phase.origin);
            let (grads, record) = self.gradients(method, &model, step, device)?;
            // As TRL: the global norm is measured (and logged) only when it clips.
            let (grads, grad_norm) = match self.config.max_grad_norm {
                Some(max_norm) => {
                    let (grads, norm) = clip_global_norm(&model, grads, Some(max_norm));
                    (grads, Some(norm))
                }
                None => (grads, None),
            };
            let grads = shards.owned_gradients(&model, grads);
            model = shards.share_updates(optimizer.step(lr, model, grads))?;
            step_time += started.elapsed();
            self.state.step = step + 1;
            self.report(method, step, phase, record, grad_norm, lr, step_time);
            if let Some(line) = self.evaluation(method, &model, step, phase)? {
                self.progress.println(&line);
            }
            if let Some(signal) = self.checkpoint(&model, &optimizer, &shards, step, device)? {
                return Ok(Fitted {
                    model,
                    optimizer,
                    stopped: Some(signal),
                    step_time,
                });
            }
        }
        Ok(Fitted {
            model,
            optimizer,
            stopped: None,
            step_time,
        })
    }

    /// The accumulated gradients of step `step`'s micro-batches and their mean metrics,
    /// checked to be finite (a NaN must stop the run, not be trained on).
    fn gradients<B, M>(
        &mut self,
        method: &mut M,
        model: &M::Model,
        step: usize,
        device: &B::Device,
    ) -> Result<(GradientsParams, Map<String, serde_json::Value>)>
    where
        B: AutodiffBackend,
        M: Method<B>,
    {
        if self.config.reseed_every_step {
            B::seed(
                device,
                self.config.seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
        }
        let accum = self.config.grad_accum;
        let replica = &self.config.replica;
        let global_batch = self.config.batch_size * replica.world();
        let mut accumulator = GradientsAccumulator::<M::Model>::new();
        let mut record = Map::new();
        let mut tokens = 0;
        let shards: Vec<Vec<usize>> = (0..accum)
            .map(|micro| replica.shard(&self.order.batch(step * accum + micro, global_batch)))
            .collect();
        let weights = micro_batch_weights::<B, M>(method, &shards, replica, device)?;
        for (shard, weight) in shards.iter().zip(weights) {
            let out = method.loss(model, shard, step)?;
            tokens += out.tokens;
            add_means(&mut record, &out.metrics, accum);
            // Times 1 (a mean over pairs) is exact, so such a step divides as it always did.
            let grads = method.backward(model, out.loss * weight / accum as f64);
            accumulator.accumulate(model, grads);
        }
        let tokens = self.replicas_mean::<B::InnerBackend>(&mut record, tokens, device)?;
        self.state.num_tokens += tokens;
        self.progress.add_tokens(tokens);
        check_finite(&record, step)?;
        let grads = replica.mean_gradients(model, accumulator.grads())?;
        Ok((grads, record))
    }

    /// The replicas' mean of every metric in `record` and their total of `tokens` (on one
    /// device, these very values).
    fn replicas_mean<B: Backend>(
        &self,
        record: &mut Map<String, serde_json::Value>,
        tokens: usize,
        device: &B::Device,
    ) -> Result<usize> {
        let replica = &self.config.replica;
        if replica.world() == 1 {
            return Ok(tokens);
        }
        // NaN travels through the sum, so a non-finite metric anywhere stops every replica.
        let mut values: Vec<f64> = record
            .values()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        values.push(tokens as f64);
        let sums = replica.sum::<B>(&values, device)?;
        let world = replica.world() as f64;
        for (value, sum) in record.values_mut().zip(&sums) {
            *value = json!(sum / world);
        }
        Ok(sums.last().copied().unwrap_or(0.0).round() as usize)
    }

    /// Redraws the progress bar; every `log_every` steps and at the phase's end, a log line
    /// and a record in `metrics.jsonl`.
    #[allow(clippy::too_many_arguments)]
    fn report<B: AutodiffBackend, M: Method<B>>(
        &mut self,
        method: &M,
        step: usize,
        phase: &Phase,
        mut record: Map<String, serde_json::Value>,
        grad_norm: Option<f64>,
        lr: f64,
        step_time: Duration,
    ) {
        let shown: Vec<String> = method
            .shown()
            .iter()
            .filter_map(|k| {
                let value = record.get(*k)?.as_f64()?;
                Some(format!("{} {value:.4}", k.rsplit('/').next()?))
            })
            .collect();
        let shown = shown.join(" ");
        let label = method.phase();
        self.progress.update(step, label, &shown);
        let logged = (step + 1).is_multiple_of(self.config.log_every) || step + 1 == phase.end;
        if !logged {
            return;
        }
        record.insert("step".into(), json!(step + 1));
        record.insert("phase".into(), json!(label));
        if let Some(norm) = grad_norm {
            record.insert("grad_norm".into(), json!(norm));
        }
        record.insert("learning_rate".into(), json!(lr));
        record.insert("num_tokens".into(), json!(self.state.num_tokens));
        for (name, value) in method.timing_metrics(step_time) {
            record.insert(name.into(), json!(value));
        }
        self.progress.line(step, label, &shown);
        self.metrics.write(&record);
    }

    /// The method's evaluation every `eval_every` steps of the phase (not after the run's last
    /// step: the program evaluates the final model itself; not when a stop was requested:
    /// the grace period a scheduler gives is for saving).
    fn evaluation<B: AutodiffBackend, M: Method<B>>(
        &mut self,
        method: &mut M,
        model: &M::Model,
        step: usize,
        phase: &Phase,
    ) -> Result<Option<String>> {
        let every = self.config.eval_every;
        let due = every > 0 && (step + 1 - phase.origin).is_multiple_of(every);
        let main = self.config.replica.is_main();
        if !due || !main || step + 1 == self.total || self.stops.received().is_some() {
            return Ok(None);
        }
        method.evaluate(model, step + 1, &mut self.metrics)
    }

    /// Saves a checkpoint every `save_every` steps, once `save_every_time` has passed since
    /// the last one, at the run's last step, and on a stop request; returns the request's
    /// signal when the run must stop here (before its last step).
    fn checkpoint<B, M>(
        &mut self,
        model: &M,
        optimizer: &TrainerOptimizer<M, B>,
        shards: &OptimizerShards,
        step: usize,
        device: &B::Device,
    ) -> Result<Option<StopSignal>>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
    {
        let due = self
            .config
            .save_every_time
            .is_some_and(|t| self.last_save.elapsed() >= t);
        let (stop, timed) = self.agreed::<B::InnerBackend>(due, device)?;
        let last = step + 1 == self.total;
        let every = self.config.save_every;
        let periodic = every > 0 && (step + 1).is_multiple_of(every);
        if !(periodic || timed || stop.is_some() || last) {
            return Ok(None);
        }
        // Every replica takes part (a sharded optimizer's state is gathered from them all);
        // the main one saves the model and the state for all.
        self.last_save = Instant::now();
        if let Some(optimizer_record) = shards.whole_record(model, optimizer)? {
            let saved = self
                .checkpoints
                .save(step + 1, model, optimizer_record, &self.state)?;
            if let (Some(signal), false) = (stop, last) {
                self.progress.println(&format!(
                    "{}: checkpoint saved to {}; resume with --resume",
                    signal.name(),
                    saved.display()
                ));
            }
        }
        Ok(stop.filter(|_| !last))
    }

    /// Checks that every replica starts a fit at the same step: nodes that resumed from
    /// different checkpoints (each reads its own `--output`) would train apart and wait for
    /// each other forever.
    fn check_same_step<B: Backend>(&self, device: &B::Device) -> Result<()> {
        let replica = &self.config.replica;
        if replica.world() == 1 {
            return Ok(());
        }
        let step = self.state.step as f64;
        let total = replica.sum::<B>(&[step], device)?[0];
        match total == step * replica.world() as f64 {
            true => Ok(()),
            false => Err(crate::Error::Training(format!(
                "--resume: the replicas start from different steps (this one from step {}); \
                 every node must read the same checkpoints: give them one --output on a \
                 shared file system",
                self.state.step
            ))),
        }
    }

    /// What every replica acts on at this step's end: a stop request received by any of them
    /// (SIGTERM before SIGINT), so that all stop at the same step and none waits for the
    /// others in the next all-reduce; and whether a timed checkpoint is `due` on any of them
    /// (their clocks differ, and a sharded optimizer's state is gathered by all to save).
    fn agreed<B: Backend>(
        &self,
        due: bool,
        device: &B::Device,
    ) -> Result<(Option<StopSignal>, bool)> {
        let own = self.stops.received();
        if self.config.replica.world() == 1 {
            return Ok((own, due));
        }
        let flag = |on: bool| f64::from(u8::from(on));
        let flags = [
            flag(own == Some(StopSignal::Interrupt)),
            flag(own == Some(StopSignal::Terminate)),
            flag(due),
        ];
        let seen = self.config.replica.sum::<B>(&flags, device)?;
        let stop = match (seen[0] > 0.0, seen[1] > 0.0) {
            (_, true) => Some(StopSignal::Terminate),
            (true, false) => Some(StopSignal::Interrupt),
            (false, false) => None,
        };
        Ok((stop, seen[2] > 0.0))
    }
}

/// Each micro-batch's weight in its step (1 when the method's loss is a mean over pairs; see
/// [`Method::loss_items`]): its items times the number of micro-batches of the step over all
/// replicas, over the step's items, so that the loop's average of the weighted means is the
/// mean over every item.
fn micro_batch_weights<B, M>(
    method: &M,
    shards: &[Vec<usize>],
    replica: &Replica,
    device: &B::Device,
) -> Result<Vec<f64>>
where
    B: AutodiffBackend,
    M: Method<B>,
{
    let items: Option<Vec<usize>> = shards.iter().map(|s| method.loss_items(s)).collect();
    let Some(items) = items else {
        return Ok(vec![1.0; shards.len()]);
    };
    let local = items.iter().sum::<usize>() as f64;
    let total = replica.sum::<B::InnerBackend>(&[local], device)?[0];
    if total == 0.0 {
        return Ok(vec![1.0; shards.len()]);
    }
    let micro_batches = (shards.len() * replica.world()) as f64;
    Ok(items
        .iter()
        .map(|&n| n as f64 * micro_batches / total)
        .collect())
}
