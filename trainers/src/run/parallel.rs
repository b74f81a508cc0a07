//! Launching a data-parallel run: `--devices`, and one replica per device on a thread of its
//! own.

use std::sync::mpsc;

use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::training::{Replica, StopSignal};

/// Where a run trains: how many replicas on this machine.
#[derive(Debug, Clone, Args, Serialize, Deserialize, PartialEq)]
pub struct ParallelArgs {
    /// Data-parallel replicas on this machine, each on its share of every batch (--batch-size
    /// is per replica): on cpu a count of replicas (threads); on cuda a count (GPUs 0..N-1)
    /// or a list of GPU indices, e.g. 0,1,2,3.
    #[arg(long, default_value = "1", value_name = "N|LIST")]
    #[serde(default = "one_device")]
    pub devices: String,
}

fn one_device() -> String {
    "1".into()
}

impl Default for ParallelArgs {
    fn default() -> Self {
        Self {
            devices: one_device(),
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
        Ok(())
    }

    /// The replicas of this machine, in rank order.
    pub fn replicas(&self) -> Vec<Replica> {
        let peers = self.device_indices().map_or(1, |d| d.len());
        (0..peers).map(|peer| Replica::new(peer, peers)).collect()
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
    if replicas.len() == 1 {
        return train(&replicas[0], &devices[0]);
    }
    let (results, received) = mpsc::channel();
    for (replica, device) in replicas.into_iter().zip(devices) {
        let (results, train) = (results.clone(), train.clone());
        std::thread::spawn(move || {
            replica.enter();
            let outcome = replica
                .join::<B::InnerBackend>(&device)
                .and_then(|()| train(&replica, &device));
            let outcome = outcome.and_then(|stopped| {
                replica.leave::<B::InnerBackend>()?;
                Ok(stopped)
            });
            let _ = results.send(outcome);
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
