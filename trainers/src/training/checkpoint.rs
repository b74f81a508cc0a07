//! Checkpoints that resume exactly: the model, the optimizer's state and the trainer's own
//! state (step, data order, random streams), written atomically.
//!
//! A checkpoint is written into `checkpoints/step-NNNNNNNN.partial/` and renamed to
//! `checkpoints/step-NNNNNNNN/` once every file is on disk. A rename within one folder is
//! atomic, so a process killed while saving leaves at worst a `.partial` folder, which resuming
//! ignores: the newest complete checkpoint is always readable.
//!
//! burn 0.21's `Learner` checkpoints once per epoch only (per-step checkpoints arrived in 0.22)
//! and has no notion of data order, hence this module.

use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Record, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

const PREFIX: &str = "step-";
const PARTIAL: &str = ".partial";
/// The run's settings, saved in every checkpoint so that a resume can be checked against them.
pub const SETTINGS_FILE: &str = "settings.json";

/// What a checkpoint records besides the model and the optimizer. The data order and every
/// random draw are functions of the seed and the step, so the step is all it takes to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RunState {
    /// Optimizer steps done (all phases together).
    pub step: usize,
    /// Real tokens processed so far.
    pub num_tokens: usize,
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

/// The checkpoints of one run, in `OUTPUT/checkpoints`.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
    keep: usize,
    settings: Option<serde_json::Value>,
}

impl Checkpoints {
    /// Checkpoints under `output`, keeping the newest `keep` (at least one).
    pub fn new(output: &Path, keep: usize) -> Self {
        Self {
            dir: output.join("checkpoints"),
            keep: keep.max(1),
            settings: None,
        }
    }

    /// Saves `settings` (the run's configuration) in every checkpoint, as `settings.json`.
    pub fn with_settings(mut self, settings: serde_json::Value) -> Self {
        self.settings = Some(settings);
        self
    }

    /// The folder the checkpoints are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest complete checkpoint: its step and folder.
    pub fn latest(&self) -> Option<(usize, PathBuf)> {
        let entries = std::fs::read_dir(&self.dir).ok()?;
        entries
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let name = entry.file_name().into_string().ok()?;
                let step = name.strip_prefix(PREFIX)?.parse::<usize>().ok()?;
                entry.path().is_dir().then(|| (step, entry.path()))
            })
            .max_by_key(|(step, _)| *step)
    }

    /// Saves `model`, the optimizer's state (`optimizer_record`) and `state` as the checkpoint
    /// of `step`, then removes all but the newest `keep` checkpoints.
    pub fn save<B, M, R, S>(
        &self,
        step: usize,
        model: &M,
        optimizer_record: R,
        state: &S,
    ) -> Result<PathBuf>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        R: Record<B>,
        S: Serialize,
    {
        let name = format!("{PREFIX}{step:08}");
        let partial = self.dir.join(format!("{name}{PARTIAL}"));
        let done = self.dir.join(&name);
        if partial.exists() {
            std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        }
        std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        save_module(model, &partial.join("model"))?;
        let optimizer_path = partial.join("optimizer");
        recorder()
            .record(optimizer_record, optimizer_path.clone())
            .map_err(|e| Error::invalid(&optimizer_path, format!("could not be written: {e}")))?;
        write_json(&partial.join("state.json"), state)?;
        if let Some(settings) = &self.settings {
            write_json(&partial.join(SETTINGS_FILE), settings)?;
        }
        sync_dir(&partial);
        if done.exists() {
            std::fs::remove_dir_all(&done).map_err(|e| Error::io(&done, e))?;
        }
        std::fs::rename(&partial, &done).map_err(|e| Error::io(&done, e))?;
        sync_dir(&self.dir);
        self.prune()?;
        Ok(done)
    }

    /// Loads a checkpoint folder into `model` and `optimizer` (freshly built, of the same
    /// architecture) and returns them with the saved state.
    pub fn load<B, M, O, S>(
        folder: &Path,
        model: M,
        optimizer: O,
        device: &B::Device,
    ) -> Result<(M, O, S)>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
        S: DeserializeOwned,
    {
        let model = load_module(model, &folder.join("model"), device)?;
        let optimizer_path = folder.join("optimizer");
        let record = recorder()
            .load(optimizer_path.clone(), device)
            .map_err(|e| Error::invalid(&optimizer_path, format!("could not be read: {e}")))?;
        let optimizer = optimizer.load_record(record);
        let state = read_json(&folder.join("state.json"))?;
        Ok((model, optimizer, state))
    }

    /// With `resume`, loads the newest checkpoint into `model` and `optimizer` and returns its
    /// state (an error when there is none: a mistyped folder must not silently start over);
    /// without, returns them as they are at step 0.
    pub fn resume<B, M, O>(
        &self,
        resume: bool,
        model: M,
        optimizer: O,
        device: &B::Device,
    ) -> Result<(M, O, RunState)>
    where
        B: AutodiffBackend,
        M: AutodiffModule<B>,
        O: Optimizer<M, B>,
    {
        let fresh = RunState {
            step: 0,
            num_tokens: 0,
        };
        if !resume {
            return Ok((model, optimizer, fresh));
        }
        match self.latest() {
            Some((_, folder)) => {
                let (model, optimizer, state): (M, O, RunState) =
                    Self::load(&folder, model, optimizer, device)?;
                crate::say!("resumed from {} (step {})", folder.display(), state.step);
                Ok((model, optimizer, state))
            }
            None => Err(self.nothing_to_resume()),
        }
    }

    /// The error of a resume with no checkpoint to resume from.
    pub fn nothing_to_resume(&self) -> Error {
        Error::Training(format!(
            "--resume: no checkpoint in {} to resume from (check --output, or give \
             --resume auto to start fresh when there is none)",
            self.dir.display()
        ))
    }

    /// Removes all but the newest `keep` checkpoints, and leftovers of interrupted saves.
    fn prune(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .flatten()
        {
            if entry.file_name().to_string_lossy().ends_with(PARTIAL) {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        let mut complete: Vec<(usize, PathBuf)> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, e))?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let name = entry.file_name().into_string().ok()?;
                let step = name.strip_prefix(PREFIX)?.parse::<usize>().ok()?;
                Some((step, entry.path()))
            })
            .collect();
        complete.sort();
        let excess = complete.len().saturating_sub(self.keep);
        for (_, path) in complete.into_iter().take(excess) {
            std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        Ok(())
    }
}

/// Saves a module with burn's recorder (parameter ids included, so an optimizer state saved
/// beside it still matches after loading). `path` gets the recorder's extension.
pub fn save_module<B: Backend, M: Module<B>>(module: &M, path: &Path) -> Result<()> {
    module
        .clone()
        .save_file(path.to_path_buf(), &recorder())
        .map_err(|e| Error::invalid(path, format!("could not be written: {e}")))
}

/// Loads a module saved by [`save_module`] into `module` (of the same architecture).
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    path: &Path,
    device: &B::Device,
) -> Result<M> {
    module
        .load_file(path.to_path_buf(), &recorder(), device)
        .map_err(|e| Error::invalid(path, format!("could not be read: {e}")))
}

/// Writes `value` as pretty JSON.
pub fn write_json<S: Serialize>(path: &Path, value: &S) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("the trainers' state serialises");
    std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

/// Reads JSON written by [`write_json`].
pub fn read_json<S: DeserializeOwned>(path: &Path) -> Result<S> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(path, format!("{e}")))
}

/// Flushes a folder's entries to disk (best effort: not every platform can open a folder).
fn sync_dir(path: &Path) {
    for entry in std::fs::read_dir(path).into_iter().flatten().flatten() {
        if let Ok(file) = std::fs::File::open(entry.path()) {
            let _ = file.sync_all();
        }
    }
    if let Ok(dir) = std::fs::File::open(path) {
        let _ = dir.sync_all();
    }
}
