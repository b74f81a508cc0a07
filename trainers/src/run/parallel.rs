//! Launching a data-parallel run: `--devices` (and `--nodes` for several machines), and one
//! replica per device on a thread of its own.

use std::sync::mpsc;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::training::{Endpoint, NodeLink, Replica, StopSignal};

/// Where a run trains: how many replicas on this machine, and on how many machines.
#[derive(Debug, Clone, Args, Serialize, Deserialize, PartialEq)]
pub struct ParallelArgs {
    /// Data-parallel replicas on this machine, each on its share of every batch (--batch-size
    /// is per replica): on cpu a count of replicas (threads); on cuda a count (GPUs 0..N-1)
    /// or a list of GPU indices, e.g. 0,1,2,3.
    #[arg(long, default_value = "1", value_name = "N|LIST")]
    #[serde(default = "one_device")]
    pub devices: String,
    /// Machines in the run, each running this command with its own --node-rank and the same
    /// --devices count (a step sees batch-size × devices × nodes × grad-accum pairs).
    #[arg(long, default_value_t = 1, value_name = "N")]
    #[serde(default = "one")]
    pub nodes: usize,
    /// This machine's rank, 0..nodes; node 0 prints, saves and starts the orchestrator.
    #[arg(long, default_value_t = 0, value_name = "R")]
    #[serde(default)]
    pub node_rank: usize,
    /// HOST:PORT of burn's global orchestrator, on node 0 (which listens on that port);
    /// needed with --nodes.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(default)]
    pub orchestrator: Option<String>,
    /// HOST:PORT at which the other machines reach this one (its tensor data service listens
    /// on that port); needed with --nodes.
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(default)]
    pub node_address: Option<String>,
    /// Shard AdamW's state across the replicas (ZeRO stage 1): each keeps and updates about
    /// 1/N of it, then sends its parameters' new values to the others; the same numbers as
    /// without, less memory per replica, one more all-reduce of the trained parameters per
    /// step. Checkpoints hold the whole state either way. Nothing to shard (and no effect)
    /// with one replica.
    #[arg(long)]
    #[serde(default)]
    pub shard_optimizer: bool,
}

fn one_device() -> String {
    "1".into()
}

fn one() -> usize {
    1
}

impl Default for ParallelArgs {
    fn default() -> Self {
        Self {
            devices: one_device(),
            nodes: 1,
            node_rank: 0,
            orchestrator: None,
            node_address: None,
            shard_optimizer: false,
        }
    }
}

impl ParallelArgs {
    /// The device indices of this machine's replicas: `N` is `0..N`, a list is itself.
    pub fn device_indices(&self) -> std::result::Result<Vec<usize>, String> {
        let text = self.devices.trim();
        let bad = || {
            format!(
                "--devices takes a count of devices (2) or a list of GPU indices (0,1,3), got \
                 {text:?}"
            )
        };
        if !text.contains(',') {
            let count: usize = text.parse().map_err(|_| bad())?;
            return match count {
                0 => Err("--devices must be at least 1".into()),
                n => Ok((0..n).collect()),
            };
        }
        let indices: Vec<usize> = text
            .split(',')
            .map(|part| part.trim().parse().map_err(|_| bad()))
            .collect::<std::result::Result<_, _>>()?;
        let mut unique = indices.clone();
        unique.sort_unstable();
        unique.dedup();
        if unique.len() != indices.len() {
            return Err(format!("--devices lists a device twice: {text}"));
        }
        Ok(indices)
    }

    /// Checks the flags (`cuda`: whether the run is on GPUs, where a list is allowed).
    pub fn validate(&self, cuda: bool) -> std::result::Result<(), String> {
        self.device_indices()?;
        if !cuda && self.devices.contains(',') {
            return Err(format!(
                "--devices on cpu is a count of replicas, got the list {}",
                self.devices
            ));
        }
        self.link().map(|_| ())
    }

    /// This machine's place among several (`None` for a run on one machine).
    pub fn link(&self) -> std::result::Result<Option<NodeLink>, String> {
        if self.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if self.nodes == 1 {
            return match (self.node_rank, &self.orchestrator, &self.node_address) {
                (0, None, None) => Ok(None),
                _ => Err(
                    "--node-rank, --orchestrator and --node-address go with --nodes 2 or \
                          more"
                        .into(),
                ),
            };
        }
        if self.node_rank >= self.nodes {
            return Err(format!(
                "--node-rank must be below --nodes ({}), got {}",
                self.nodes, self.node_rank
            ));
        }
        let endpoint = |value: &Option<String>, flag: &str| match value {
            Some(text) => Endpoint::parse(text, flag),
            None => Err(format!(
                "--nodes {} needs {flag} HOST:PORT (see docs/trainers.md, several machines)",
                self.nodes
            )),
        };
        let orchestrator = endpoint(&self.orchestrator, "--orchestrator")?;
        let node = endpoint(&self.node_address, "--node-address")?;
        Ok(Some(NodeLink::new(
            self.nodes,
            self.node_rank,
            orchestrator,
            node,
        )))
    }

    /// The replicas of this machine, in rank order.
    pub fn replicas(&self) -> Vec<Replica> {
        let peers = self.device_indices().map_or(1, |d| d.len());
        match self.link() {
            Ok(Some(link)) => (0..peers)
                .map(|peer| Replica::on_node(peer, peers, link.clone()))
                .collect(),
            _ => (0..peers).map(|peer| Replica::new(peer, peers)).collect(),
        }
    }
}

/// Trains one replica per device, each on a thread of its own that runs `train` (the whole
/// program) as its replica, and returns the main replica's result. The first replica to fail
/// ends the run with its error (the others may be waiting for it in an all-reduce: returning
/// lets the process exit instead of hanging).
pub fn train_replicas<B, F>(
    replicas: Vec<Replica>,
    devices: Vec<B::Device>,
    train: F,
) -> Result<Option<StopSignal>>
where
    B: AutodiffBackend,
    F: Fn(&Replica, &B::Device) -> Result<Option<StopSignal>> + Send + Sync + Clone + 'static,
{
    if let [replica] = &replicas[..] {
        return run_replica::<B, _>(replica, &devices[0], &train);
    }
    let (results, received) = mpsc::channel();
    for (replica, device) in replicas.into_iter().zip(devices) {
        let (results, train) = (results.clone(), train.clone());
        std::thread::spawn(move || {
            let _ = results.send(run_replica::<B, _>(&replica, &device, &train));
        });
    }
    drop(results);
    // Every replica stops at the same step for the same signal (they agree on it).
    let mut stopped = None;
    for outcome in received {
        stopped = outcome?;
    }
    Ok(stopped)
}

/// Runs `train` as `replica` on this thread: joins the collective (a run of one replica joins
/// nothing), trains, leaves.
fn run_replica<B, F>(replica: &Replica, device: &B::Device, train: &F) -> Result<Option<StopSignal>>
where
    B: AutodiffBackend,
    F: Fn(&Replica, &B::Device) -> Result<Option<StopSignal>>,
{
    replica.enter();
    replica.join::<B::InnerBackend>(device)?;
    replica.check_ranks::<B::InnerBackend>(device)?;
    let stopped = train(replica, device)?;
    replica.leave::<B::InnerBackend>()?;
    Ok(stopped)
}
