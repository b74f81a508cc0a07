//! Optimizer state sharded across data-parallel replicas (ZeRO stage 1, `--shard-optimizer`).
//!
//! Each trained parameter has one owner among the replicas, which alone keeps its AdamW
//! moments and updates it: the others drop its (already averaged) gradient before the
//! optimizer's step, so burn's optimizer never creates state for it there, and receive the
//! updated values from the owner after the step. Each replica holds about 1/N of the state;
//! every replica computes what one device computes (the same averaged gradients, the same
//! state), so the parameters are those of an unsharded run.
//!
//! burn 0.21's `MultiDeviceOptim::OptimSharded` belongs to burn-train's learner (several
//! devices driven by one thread); the trainers run one replica per thread in their own loop,
//! so the sharding is written here, on the same collective as the gradients' mean. The
//! owner's values reach the others through a sum in which only the owner contributes (burn
//! 0.21 has no broadcast between machines), as [`Replica`] starts replicas equal.
//!
//! Checkpoints hold the whole state, gathered to the main replica when it saves: a checkpoint
//! of a sharded run and of an unsharded one are the same, and either resumes the other.

use std::collections::HashSet;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{AdamWState, AdaptiveMomentumState, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use hashbrown::HashMap;

use super::adamw::HostAdamW;
use super::data_parallel::Replica;
use crate::error::{Error, Result};

/// The trainers' optimizer's state: AdamW's moments by parameter.
pub type OptimizerRecord<B> = HashMap<ParamId, AdaptorRecord<HostAdamW, B>>;

/// The trainers' optimizer (see [`HostAdamW`]).
pub type TrainerOptimizer<M, B> = OptimizerAdaptor<HostAdamW, M, B>;

/// Which of a model's trained parameters this replica owns (updates, and keeps state for).
pub struct OptimizerShards {
    replica: Replica,
    /// `None`: not sharded (every replica updates everything).
    owned: Option<HashSet<ParamId>>,
    /// Trained values this replica keeps state for, and in all.
    kept: (usize, usize),
}

impl OptimizerShards {
    /// `model`'s trained parameters dealt to the replicas: in the module's order (the same in
    /// every replica), each to the replica with the fewest elements so far. Not sharded when
    /// `shard` is off or the run has one replica.
    pub fn new<B: AutodiffBackend, M: AutodiffModule<B>>(
        model: &M,
        replica: &Replica,
        shard: bool,
    ) -> Self {
        let mut deal = Deal {
            loads: vec![0; replica.world()],
            rank: replica.rank(),
            owned: HashSet::new(),
        };
        model.visit(&mut deal);
        let total = deal.loads.iter().sum();
        let sharded = shard && replica.world() > 1;
        Self {
            replica: replica.clone(),
            kept: (
                if sharded {
                    deal.loads[deal.rank]
                } else {
                    total
                },
                total,
            ),
            owned: sharded.then_some(deal.owned),
        }
    }

    /// A line that says how the state is split (`None` when it is not).
    pub fn summary(&self) -> Option<String> {
        self.owned.as_ref()?;
        let (kept, total) = self.kept;
        Some(format!(
            "optimizer state sharded over {} replicas: replica {} keeps {kept} of {total} \
             trained values",
            self.replica.world(),
            self.replica.rank()
        ))
    }

    /// `grads` without the parameters other replicas own (their step is not this replica's).
    pub fn owned_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        mut grads: GradientsParams,
    ) -> GradientsParams {
        let Some(owned) = &self.owned else {
            return grads;
        };
        struct DropOthers<'a> {
            owned: &'a HashSet<ParamId>,
            grads: &'a mut GradientsParams,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for DropOthers<'_> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                if !self.owned.contains(&param.id) {
                    self.grads.remove::<B::InnerBackend, D>(param.id);
                }
            }
        }
        model.visit(&mut DropOthers {
            owned,
            grads: &mut grads,
        });
        grads
    }

    /// `model` with every trained parameter as its owner updated it.
    pub fn share_updates<B: AutodiffBackend, M: AutodiffModule<B>>(&self, model: M) -> Result<M> {
        let Some(owned) = &self.owned else {
            return Ok(model);
        };
        self.replica
            .parameters_from(model, true, |id| owned.contains(&id))
    }

    /// `optimizer` keeping only the state of the parameters this replica owns (after a
    /// resume, which loads the whole state).
    pub fn keep_owned<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        optimizer: TrainerOptimizer<M, B>,
    ) -> TrainerOptimizer<M, B> {
        let Some(owned) = &self.owned else {
            return optimizer;
        };
        let mut record = optimizer.to_record();
        record.retain(|id, _| owned.contains(id));
        optimizer.load_record(record)
    }

    /// The whole optimizer state, by the ids of `model`'s parameters, on the main replica
    /// (`None` on the others); every replica must call it (it gathers from the owners).
    pub fn whole_record<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        optimizer: &TrainerOptimizer<M, B>,
    ) -> Result<Option<OptimizerRecord<B>>> {
        let Some(owned) = &self.owned else {
            return Ok(self.replica.is_main().then(|| optimizer.to_record()));
        };
        let mut gather = GatherState {
            replica: &self.replica,
            owned,
            own: optimizer.to_record(),
            whole: HashMap::new(),
            error: None,
        };
        model.visit(&mut gather);
        match gather.error {
            Some(e) => Err(e),
            None => Ok(self.replica.is_main().then_some(gather.whole)),
        }
    }
}

/// Deals the trained parameters out, fewest elements first.
struct Deal {
    loads: Vec<usize>,
    rank: usize,
    owned: HashSet<ParamId>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Deal {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !param.is_require_grad() {
            return;
        }
        let owner = (0..self.loads.len())
            .min_by_key(|&rank| self.loads[rank])
            .expect("at least one replica");
        self.loads[owner] += param.shape().num_elements();
        if owner == self.rank {
            self.owned.insert(param.id);
        }
    }
}

/// Gathers every parameter's AdamW state from its owner.
struct GatherState<'a, B: AutodiffBackend> {
    replica: &'a Replica,
    owned: &'a HashSet<ParamId>,
    own: OptimizerRecord<B>,
    whole: OptimizerRecord<B>,
    error: Option<Error>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GatherState<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() || !param.is_require_grad() {
            return;
        }
        match self.gather::<D>(param) {
            // Only the main replica keeps the gathered state (it saves it): the others drop
            // each parameter's as soon as it is gathered.
            Ok(Some(state)) if self.replica.is_main() => {
                self.whole
                    .insert(param.id, AdaptorRecord::from_state(state));
            }
            Ok(_) => {}
            Err(e) => self.error = Some(e),
        }
    }
}

impl<B: AutodiffBackend> GatherState<'_, B> {
    /// The owner's state of `param` (`None` when it has none yet), on every replica.
    fn gather<const D: usize>(
        &mut self,
        param: &Param<Tensor<B, D>>,
    ) -> Result<Option<AdamWState<B::InnerBackend, D>>> {
        let mine = self.owned.contains(&param.id);
        let state = match mine {
            true => self.own.remove(&param.id).map(|r| r.into_state::<D>()),
            false => None,
        };
        let device = param.device();
        let time = state.as_ref().map_or(0, |s| s.momentum.time);
        let known = [f64::from(u8::from(state.is_some())), time as f64];
        let [has, time] = self.replica.sum::<B::InnerBackend>(&known, &device)?[..] else {
            unreachable!("two values summed")
        };
        if has == 0.0 {
            return Ok(None);
        }
        let zeros = || Tensor::zeros(param.shape(), &device);
        let (moment_1, moment_2) = match state {
            Some(s) => (s.momentum.moment_1, s.momentum.moment_2),
            None => (zeros(), zeros()),
        };
        let moment_1 = self.replica.from_one(moment_1, mine)?;
        let moment_2 = self.replica.from_one(moment_2, mine)?;
        let momentum = AdaptiveMomentumState::new(time as usize, moment_1, moment_2);
        Ok(Some(AdamWState::new(momentum)))
    }
}
