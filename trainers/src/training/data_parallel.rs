//! Data-parallel replicas on burn's collective (`burn::collective`, burn-collective 0.21).
//!
//! Every replica runs the whole program, as the ranks of `torchrun` or `accelerate` do: each
//! loads the model and the data, trains on its shard of every global batch, and the replicas'
//! gradients are averaged with burn's all-reduce before every optimizer step, so that all of
//! them take the same step. Only the main replica (rank 0) prints, writes metrics and
//! saves checkpoints and the model.
//!
//! Why burn-collective's functions and not burn-train's DDP strategy: the trainers run their
//! own loop ([`super::Trainer`]), and burn-collective's `all_reduce` works on any backend
//! (threads of one process on Flex in CI, one thread per CUDA device), which burn-train's
//! `DistributedBackend` (CubeCL backends only) does not.
//!
//! Several machines: the replicas of every node ([`NodeLink`]) form one run, ranked node by
//! node; burn-collective reduces within each node, then between the nodes.

use std::cell::Cell;
use std::sync::Mutex;

use burn::collective::{
    all_reduce, finish_collective, register, CollectiveConfig, PeerId, ReduceOperation,
};
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use super::nodes::NodeLink;
use crate::error::{Error, Result};

/// Where one replica stands in a data-parallel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Its index among this machine's replicas.
    peer: usize,
    /// The number of replicas on each machine.
    peers: usize,
    /// The other machines of a multi-node run.
    link: Option<NodeLink>,
}

thread_local! {
    /// Whether this thread is a replica other than the main one (it stays quiet).
    static SECONDARY: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread speaks for the run: the main replica, or any thread of a run with one
/// replica. See [`crate::say`].
pub fn speaks() -> bool {
    !SECONDARY.with(Cell::get)
}

/// `println!` on the main replica only: every replica runs the whole program, one prints it.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::training::speaks() {
            println!($($arg)*);
        }
    };
}

impl Replica {
    /// The only replica of a run on one device.
    pub fn single() -> Self {
        Self::new(0, 1)
    }

    /// Replica `peer` of `peers` (threads of this process, one per device).
    pub fn new(peer: usize, peers: usize) -> Self {
        Self {
            peer,
            peers,
            link: None,
        }
    }

    /// Replica `peer` of the `peers` on this machine, one of the machines of `link`.
    pub fn on_node(peer: usize, peers: usize, link: NodeLink) -> Self {
        Self {
            peer,
            peers,
            link: Some(link),
        }
    }

    /// The replica's rank among the run's replicas (machine by machine).
    pub fn rank(&self) -> usize {
        self.link.as_ref().map_or(0, NodeLink::rank) * self.peers + self.peer
    }

    /// The number of replicas in the run, on every machine.
    pub fn world(&self) -> usize {
        self.link.as_ref().map_or(1, NodeLink::nodes) * self.peers
    }

    /// Whether this is the main replica (rank 0): the one that prints, logs and saves.
    pub fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// Marks the calling thread as this replica's (secondary replicas stay quiet).
    pub fn enter(&self) {
        SECONDARY.with(|s| s.set(!self.is_main()));
    }

    /// Joins the collective on `device` (with the inner backend of an autodiff one); a run
    /// with one replica joins nothing.
    pub fn join<B: Backend>(&self, device: &B::Device) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        let mut config = CollectiveConfig::default().with_num_devices(self.peers);
        if let Some(link) = &self.link {
            config = link.configure(config);
        }
        register::<B>(self.peer_id(), device.clone(), config).map_err(collective_error)
    }

    /// Leaves the collective (at the end of training). Not in a multi-node run: leaving asks
    /// the orchestrator, which ends with node 0's process (or at its SIGTERM), and a node that
    /// asked after that would wait for an answer forever; exiting closes the connections.
    pub fn leave<B: Backend>(&self) -> Result<()> {
        if self.world() == 1 || self.link.is_some() {
            return Ok(());
        }
        finish_collective::<B>(self.peer_id()).map_err(collective_error)
    }

    /// Checks that the run's replicas hold the ranks `0..world` once each (every node gave its
    /// own `--node-rank` and the same `--devices`): two nodes of one rank would both count as
    /// the main replica and add their parameters, silently.
    pub fn check_ranks<B: Backend>(&self, device: &B::Device) -> Result<()> {
        if self.world() == 1 {
            return Ok(());
        }
        let mut mine = vec![0.0; self.world()];
        mine[self.rank()] = 1.0;
        let counts = self.sum::<B>(&mine, device)?;
        match counts.iter().all(|&count| count == 1.0) {
            true => Ok(()),
            false => Err(Error::Training(format!(
                "data-parallel training: replicas by rank {counts:?}, where each rank must \
                 appear once; give every node its own --node-rank (0 to --nodes - 1) and the \
                 same --devices"
            ))),
        }
    }

    /// This replica's rows of a global micro-batch: the `rank`-th of `world` equal blocks.
    pub fn shard(&self, global: &[usize]) -> Vec<usize> {
        let size = global.len() / self.world();
        global[self.rank() * size..(self.rank() + 1) * size].to_vec()
    }

    /// The replicas' mean of every gradient of `model`'s parameters (all take the same
    /// optimizer step). Parameters are taken in the module's order, not by id as
    /// `GradientsParams::all_reduce` takes them: each replica builds its own model, and burn
    /// draws parameter ids at random, so sorted ids would pair different tensors.
    pub fn mean_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: &M,
        grads: GradientsParams,
    ) -> Result<GradientsParams> {
        if self.world() == 1 {
            return Ok(grads);
        }
        let mut visitor = MeanGradients {
            replica: self,
            grads,
            error: None,
        };
        model.visit(&mut visitor);
        match visitor.error {
            Some(e) => Err(e),
            None => Ok(visitor.grads),
        }
    }

    /// The replicas' sum of each of `values` (in f64 on the host; summed in the backend's
    /// float type, exact for counts below 2^24 in f32).
    pub fn sum<B: Backend>(&self, values: &[f64], device: &B::Device) -> Result<Vec<f64>> {
        if self.world() == 1 || values.is_empty() {
            return Ok(values.to_vec());
        }
        let local = Tensor::<B, 1>::from_data(TensorData::from(values), device);
        let summed = self.all_reduce(local, ReduceOperation::Sum)?;
        Ok(summed
            .into_data()
            .convert::<f64>()
            .into_vec::<f64>()
            .expect("f64 after convert"))
    }

    /// Every replica's rows of `local` (its shard of a batch, `[rows, ...]`), in rank order:
    /// the global batch `[world × rows, ...]`. An all-gather built on the all-reduce (each
    /// replica contributes its block and zeros elsewhere, so the sum is exact); every replica
    /// must pass the same number of rows. Not differentiable: for inputs that are detached.
    pub fn gather_rows<B: Backend, const D: usize>(
        &self,
        local: Tensor<B, D>,
    ) -> Result<Tensor<B, D>> {
        if self.world() == 1 {
            return Ok(local);
        }
        let blocks = (0..self.world())
            .map(|rank| match rank == self.rank() {
                true => local.clone(),
                false => local.zeros_like(),
            })
            .collect();
        self.all_reduce(Tensor::cat(blocks, 0), ReduceOperation::Sum)
    }

    /// The main replica's parameters in every replica (the others contribute zeros to a sum),
    /// so that replicas start equal whatever each one drew at initialisation.
    pub fn main_parameters<B: AutodiffBackend, M: AutodiffModule<B>>(&self, model: M) -> Result<M> {
        if self.world() == 1 {
            return Ok(model);
        }
        self.parameters_from(model, false, |_| self.is_main())
    }

    /// `model` with every float parameter (every trained one, with `trained_only`) replaced
    /// by its values on the replica for which `mine(id)` holds.
    pub fn parameters_from<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
        model: M,
        trained_only: bool,
        mine: impl Fn(ParamId) -> bool,
    ) -> Result<M> {
        let mut mapper = FromOne {
            replica: self,
            trained_only,
            mine,
            error: None,
        };
        let model = model.map(&mut mapper);
        mapper.error.map_or(Ok(model), Err)
    }

    /// The values of `tensor` on the one replica that passes `mine` (the others pass a tensor
    /// of the same shape), on every replica: a sum in which only that one contributes, so
    /// the values arrive unchanged (burn 0.21 has no broadcast between machines).
    pub fn from_one<B: Backend, const D: usize>(
        &self,
        tensor: Tensor<B, D>,
        mine: bool,
    ) -> Result<Tensor<B, D>> {
        if self.world() == 1 {
            return Ok(tensor);
        }
        let contribution = match mine {
            true => tensor,
            false => tensor.zeros_like(),
        };
        self.all_reduce(contribution, ReduceOperation::Sum)
    }

    fn all_reduce<B: Backend, const D: usize>(
        &self,
        tensor: Tensor<B, D>,
        op: ReduceOperation,
    ) -> Result<Tensor<B, D>> {
        let reduced = all_reduce::<B>(self.peer_id(), tensor.into_primitive().tensor(), op)
            .map_err(collective_error)?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(reduced)))
    }

    fn peer_id(&self) -> PeerId {
        PeerId::from(self.peer)
    }
}

/// Averages each parameter's gradient over the replicas, in the order the module visits them.
struct MeanGradients<'a> {
    replica: &'a Replica,
    grads: GradientsParams,
    error: Option<Error>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for MeanGradients<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.error.is_some() {
            return;
        }
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return;
        };
        match self.replica.all_reduce(grad, ReduceOperation::Mean) {
            Ok(mean) => self.grads.register(param.id, mean),
            Err(e) => self.error = Some(e),
        }
    }
}

/// Runs `build` (seeding the backend and building a model) while no other replica of this
/// process runs one: the backend's random generator is one per process (Flex's), so replicas
/// that seeded and drew at once would draw each other's numbers. One at a time, each draws
/// what a single-device run draws. Draw the model's parameters inside ([`drawn`]).
pub fn one_at_a_time<T>(build: impl FnOnce() -> T) -> T {
    static BUILDING: Mutex<()> = Mutex::new(());
    let _turn = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    build()
}

/// `model` with every parameter drawn now: burn initialises a parameter lazily, at its first
/// use, which for a replica would be outside [`one_at_a_time`].
pub fn drawn<B: Backend, M: Module<B>>(model: M) -> M {
    struct Draw;
    impl<B: Backend> ModuleVisitor<B> for Draw {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Draw);
    model
}

/// Replaces float parameters with their values on the replica `mine` picks for each.
struct FromOne<'a, F> {
    replica: &'a Replica,
    trained_only: bool,
    mine: F,
    error: Option<Error>,
}

impl<B: AutodiffBackend, F: Fn(ParamId) -> bool> ModuleMapper<B> for FromOne<'_, F> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() || (self.trained_only && !param.is_require_grad()) {
            return param;
        }
        let (replica, mine) = (self.replica, (self.mine)(param.id));
        let mut failed = None;
        let param = param.map(|tensor| {
            let trains = tensor.is_require_grad();
            match replica.from_one(tensor.clone().inner(), mine) {
                Ok(values) => Tensor::from_inner(values).set_require_grad(trains),
                Err(e) => {
                    failed = Some(e);
                    tensor
                }
            }
        });
        self.error = failed;
        param
    }
}

fn collective_error(e: burn::collective::CollectiveError) -> Error {
    Error::Training(format!(
        "data-parallel training: burn's collective failed ({e:?}); check that every replica \
         runs the same command with the same --devices"
    ))
}
