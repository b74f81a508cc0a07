//! Where a trainer's model comes from and goes to: a Hugging Face folder, a PEFT adapter folder
//! on its base, or the built-in small Llama; with LoRA adapters when asked; saved back as a
//! full folder or as a PEFT adapter folder.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::DType;

use super::config::CommonConfig;
use crate::error::Result;
use crate::hub::{
    self, is_adapter_folder, load_adapted_causal_lm, load_adapted_reward_model, save_adapter,
    AdapterFolder, AdapterTask, LoadOptions, ModelFolder, SaveOptions,
};
use crate::model::{CausalLm, DecoderConfig, LoraConfig, RewardModel};
use crate::task;
use crate::tokenizer::Tokenizer;

/// The model source: a Hugging Face folder, a PEFT adapter on one, or the built-in
/// architecture.
pub enum ModelSource {
    /// A folder to load from and to take the tokenizer and config from when saving.
    Folder(ModelFolder),
    /// A PEFT adapter folder and the base folder it names.
    Adapter {
        /// The adapter.
        adapter: AdapterFolder,
        /// Its base model.
        base: ModelFolder,
    },
    /// The built-in small Llama.
    BuiltIn(DecoderConfig),
}

/// A loaded model and the LoRA settings it was adapted with (`None`: every parameter trains).
pub struct Loaded<M> {
    /// The model.
    pub model: M,
    /// Its adapters' settings.
    pub lora: Option<LoraConfig>,
}

impl<M> Loaded<M> {
    /// `model` with fresh adapters (`with_lora`) when `lora` is given.
    fn adapted(
        model: M,
        lora: Option<&LoraConfig>,
        with_lora: impl FnOnce(M, &LoraConfig) -> M,
    ) -> Self {
        match lora {
            Some(lora) => Loaded {
                model: with_lora(model, lora),
                lora: Some(lora.clone()),
            },
            None => Loaded { model, lora: None },
        }
    }
}

/// Loading in f32, with the matrices of a frozen base in `frozen_dtype` as they are read
/// (the trainers cast them after any resume as well: a checkpoint reads back in f32).
fn load_options(frozen_dtype: Option<DType>) -> LoadOptions {
    LoadOptions {
        matrices_dtype: frozen_dtype,
        ..LoadOptions::default()
    }
}

impl ModelSource {
    /// The architecture.
    pub fn config(&self) -> &DecoderConfig {
        match self {
            ModelSource::Folder(folder) => folder.config(),
            ModelSource::Adapter { base, .. } => base.config(),
            ModelSource::BuiltIn(config) => config,
        }
    }

    /// The Hugging Face folder of the (base) model, if there is one.
    fn folder(&self) -> Option<&ModelFolder> {
        match self {
            ModelSource::Folder(folder) | ModelSource::Adapter { base: folder, .. } => Some(folder),
            ModelSource::BuiltIn(_) => None,
        }
    }

    /// The policy: loaded (with its adapter, for an adapter folder), or freshly initialised
    /// for the built-in model; with fresh adapters when `lora` is given. `frozen_dtype`: the
    /// base's matrices read in that dtype (`--base-dtype bf16`, with adapters).
    pub fn load_policy<B: Backend>(
        &self,
        lora: Option<&LoraConfig>,
        frozen_dtype: Option<DType>,
        device: &B::Device,
    ) -> Result<Loaded<CausalLm<B>>> {
        let options = load_options(frozen_dtype);
        let model = match self {
            ModelSource::Folder(folder) => folder.load_causal_lm(&options, device)?,
            ModelSource::BuiltIn(config) => CausalLm::new(config, device),
            ModelSource::Adapter { adapter, .. } => {
                let (_, model) = load_adapted_causal_lm(adapter, &options, device)?;
                let lora = Some(adapter.config().clone());
                return Ok(Loaded { model, lora });
            }
        };
        Ok(Loaded::adapted(model, lora, |m, l| m.with_lora(l, device)))
    }

    /// The reward model: a reward checkpoint, a language model with a fresh `score` head, an
    /// adapter folder, or the built-in model; with fresh adapters when `lora` is given.
    /// `frozen_dtype` as for [`ModelSource::load_policy`].
    pub fn load_reward_model<B: Backend>(
        &self,
        lora: Option<&LoraConfig>,
        frozen_dtype: Option<DType>,
        device: &B::Device,
    ) -> Result<Loaded<RewardModel<B>>> {
        let options = load_options(frozen_dtype);
        let model = match self {
            ModelSource::Folder(folder) if folder.is_reward_model() => {
                folder.load_reward_model(&options, device)?
            }
            ModelSource::Folder(folder) => folder.load_reward_model_from_base(&options, device)?,
            ModelSource::BuiltIn(config) => RewardModel::new(config, device),
            ModelSource::Adapter { adapter, .. } => {
                let (_, model) = load_adapted_reward_model(adapter, &options, device)?;
                let lora = Some(adapter.config().clone());
                return Ok(Loaded { model, lora });
            }
        };
        Ok(Loaded::adapted(model, lora, |m, l| m.with_lora(l, device)))
    }

    /// Where a PEFT adapter saved from this source names its base (`None`: the built-in
    /// model has no folder, so an adapter of it could not be loaded).
    fn adapter_base(&self) -> Option<PathBuf> {
        let path = self.folder()?.path();
        Some(std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()))
    }

    /// Saves a trained policy in `out`: a PEFT adapter folder when it was trained with `lora`
    /// (and `merge` is off, and the base is a folder), else a full Hugging Face folder.
    pub fn save_policy<B: Backend>(
        &self,
        model: &CausalLm<B>,
        lora: Option<&LoraConfig>,
        merge: bool,
        out: &Path,
    ) -> Result<()> {
        if let Some(saved) = self.save_as_adapter(model, lora, merge, AdapterTask::CausalLm, out) {
            return saved;
        }
        hub::save_causal_lm(
            model,
            self.config(),
            self.folder(),
            out,
            &SaveOptions::default(),
        )
    }

    /// Saves a trained reward model in `out` (see [`Self::save_policy`]).
    pub fn save_reward_model<B: Backend>(
        &self,
        model: &RewardModel<B>,
        lora: Option<&LoraConfig>,
        merge: bool,
        out: &Path,
    ) -> Result<()> {
        if let Some(saved) = self.save_as_adapter(model, lora, merge, AdapterTask::RewardModel, out)
        {
            return saved;
        }
        hub::save_reward_model(
            model,
            self.config(),
            self.folder(),
            out,
            &SaveOptions::default(),
        )
    }

    /// Writes the adapter folder when that is what the run saves; `None` when it saves a full
    /// folder instead.
    fn save_as_adapter<B: Backend, M: burn_store::ModuleSnapshot<B>>(
        &self,
        model: &M,
        lora: Option<&LoraConfig>,
        merge: bool,
        task: AdapterTask,
        out: &Path,
    ) -> Option<Result<()>> {
        let lora = lora.filter(|_| !merge)?;
        let Some(base) = self.adapter_base() else {
            crate::say!(
                "the built-in model has no folder an adapter could name as its base: saving \
                 the merged model instead"
            );
            return None;
        };
        Some(save_adapter(
            model,
            lora,
            task,
            &base.display().to_string(),
            out,
        ))
    }
}

/// Opens `--model` (a model folder, a PEFT adapter folder, or the built-in model) and its
/// tokenizer (an adapter's base's).
pub fn model_and_tokenizer(config: &CommonConfig) -> Result<(ModelSource, Tokenizer)> {
    match &config.model {
        Some(path) if is_adapter_folder(path) => {
            let adapter = AdapterFolder::open(path)?;
            let base = ModelFolder::open(adapter.base())?;
            let tokenizer = base.tokenizer()?;
            Ok((ModelSource::Adapter { adapter, base }, tokenizer))
        }
        Some(path) => {
            let folder = ModelFolder::open(path)?;
            let tokenizer = folder.tokenizer()?;
            Ok((ModelSource::Folder(folder), tokenizer))
        }
        None => {
            let vocabulary = task::vocabulary();
            let model = DecoderConfig::tiny(
                vocabulary.len(),
                config.builtin_hidden,
                config.builtin_layers,
            );
            Ok((
                ModelSource::BuiltIn(model),
                Tokenizer::characters(vocabulary),
            ))
        }
    }
}

/// A model a trainer wrote, read back for another role (the policy of best-of-n, the reward
/// model that scores on-policy samples): a full folder (`full`) or a PEFT adapter folder on its
/// base (`adapted`, merged by the caller), checked to have `vocab_size` tokens, as this run's
/// model does; `flag` names it in the errors.
pub fn load_for_role<M>(
    dir: &Path,
    flag: &str,
    vocab_size: usize,
    full: impl FnOnce(&ModelFolder) -> Result<M>,
    adapted: impl FnOnce(&AdapterFolder) -> Result<(ModelFolder, M)>,
) -> Result<M> {
    let (folder, model) = if is_adapter_folder(dir) {
        adapted(&AdapterFolder::open(dir)?)?
    } else {
        let folder = ModelFolder::open(dir)?;
        let model = full(&folder)?;
        (folder, model)
    };
    let theirs = folder.config().vocab_size;
    if theirs != vocab_size {
        return Err(crate::error::Error::invalid(
            dir,
            format!(
                "{flag} has a vocabulary of {theirs} tokens and this run's model {vocab_size}: \
                 give one that uses this run's tokenizer"
            ),
        ));
    }
    Ok(model)
}
