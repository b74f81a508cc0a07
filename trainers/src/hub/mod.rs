//! Hugging Face model folders: open one, load its weights into a [`CausalLm`] or a
//! [`RewardModel`], and save a trained model as such a folder again.
//!
//! A folder is what `save_pretrained` writes or the hub serves: `config.json`, the weights
//! (`model.safetensors`, or shards listed in `model.safetensors.index.json`, in f32, f16 or
//! bf16), and the tokenizer files (`tokenizer.json`, `tokenizer_config.json`, and
//! `chat_template.jinja` where newer `transformers` puts the chat template).
//!
//! ```no_run
//! use burn::backend::Flex;
//! use otpref_trainers::hub::{LoadOptions, ModelFolder, SaveOptions};
//!
//! let device = Default::default();
//! let folder = ModelFolder::open("SmolLM2-135M")?;
//! let tokenizer = folder.tokenizer()?;
//! let policy = folder.load_causal_lm::<Flex>(&LoadOptions::default(), &device)?;
//! // ... train ...
//! folder.save_causal_lm(&policy, "trained", &SaveOptions::default())?;
//! # Ok::<(), otpref_trainers::Error>(())
//! ```

mod config;
mod peft;
mod weights;

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, DType};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::{new_score_head, CausalLm, DecoderConfig, RewardModel};
use crate::tokenizer::Tokenizer;
pub use peft::{
    is_adapter_folder, save_adapter, AdapterFolder, AdapterTask, ADAPTER_CONFIG, ADAPTER_WEIGHTS,
};
use weights::{load_into, save_from, Unused, WeightFiles};

/// Tokenizer and generation files copied into a saved folder when the source has them.
const TOKENIZER_FILES: [&str; 8] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
];

/// How weights are loaded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions {
    /// The parameters' dtype: f32 by default (training on CPU, or in full precision on a GPU);
    /// `None` keeps the checkpoint's dtype (bf16 or f16 on a GPU).
    pub dtype: Option<DType>,
    /// The dtype of the checkpoint's matrices (its 2-D tensors: embeddings, projections and
    /// the LM head) where it differs from `dtype`: a LoRA base held in bf16. Each is cast as
    /// it is read, so the model never exists in `dtype` as a whole. A reward model's `score`
    /// head, which LoRA trains, stays in `dtype`. `None`: as `dtype`.
    pub matrices_dtype: Option<DType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: Some(DType::F32),
            matrices_dtype: None,
        }
    }
}

/// How a model is saved.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SaveOptions {
    /// The dtype written to the safetensors file (`None`: the parameters' own). `config.json`
    /// records it.
    pub dtype: Option<DType>,
}

/// A Hugging Face model folder, opened: its architecture is read and its weight files found;
/// the weights are read when a model is loaded.
#[derive(Debug, Clone)]
pub struct ModelFolder {
    path: PathBuf,
    config: DecoderConfig,
    raw_config: Value,
    weights: WeightFiles,
}

impl ModelFolder {
    /// Opens `path`: reads `config.json` and finds the weight files (a missing shard is an
    /// error here, before anything is loaded).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_dir() {
            return Err(Error::invalid(
                &path,
                "is not a folder; pass the model folder (with config.json and the weights)",
            ));
        }
        let (config, raw_config) = config::read_config(&path.join("config.json"))?;
        let weights = WeightFiles::find(&path)?;
        Ok(Self {
            path,
            config,
            raw_config,
            weights,
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The architecture `config.json` describes.
    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Whether the checkpoint is a reward model (`*ForSequenceClassification`), whose
    /// `score.weight` [`Self::load_reward_model`] reads.
    pub fn is_reward_model(&self) -> bool {
        self.architecture()
            .is_some_and(|a| a.ends_with("ForSequenceClassification"))
    }

    fn architecture(&self) -> Option<&str> {
        self.raw_config.get("architectures")?.get(0)?.as_str()
    }

    /// The folder's tokenizer, checked against the model: every token id must have an
    /// embedding row.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let tokenizer = Tokenizer::from_folder(&self.path, Some(&self.raw_config))?;
        let needed = tokenizer.vocab_size();
        if needed > self.config.vocab_size {
            return Err(Error::invalid(
                &self.path.join("tokenizer.json"),
                format!(
                    "has token ids up to {}, but config.json's vocab_size is {} (the embedding \
                     has that many rows); the tokenizer does not belong to this model",
                    needed - 1,
                    self.config.vocab_size
                ),
            ));
        }
        Ok(tokenizer)
    }

    /// Loads the policy (`*ForCausalLM`). With tied embeddings the head is the embedding
    /// matrix, and an `lm_head.weight` in the file (a copy some checkpoints carry) is ignored.
    pub fn load_causal_lm<B: Backend>(
        &self,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<CausalLm<B>> {
        if self.is_reward_model() {
            return Err(self.wrong_head("a reward model (score head)", "load_reward_model"));
        }
        let mut model = CausalLm::new(&self.config.to_be_loaded(), device);
        let unused = Unused {
            names: if self.config.tie_word_embeddings {
                vec!["lm_head.weight"]
            } else {
                vec![]
            },
        };
        load_into(
            &mut model,
            &self.weights,
            &self.path,
            &unused,
            (options.dtype, options.matrices_dtype),
        )?;
        Ok(model)
    }

    /// Loads a reward model from a `*ForSequenceClassification` checkpoint (one label).
    pub fn load_reward_model<B: Backend>(
        &self,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<RewardModel<B>> {
        if !self.is_reward_model() {
            return Err(self.wrong_head(
                "a language model (no score head)",
                "load_reward_model_from_base",
            ));
        }
        let mut model = RewardModel::new(&self.config.to_be_loaded(), device);
        load_into(
            &mut model,
            &self.weights,
            &self.path,
            &Unused::default(),
            (options.dtype, options.matrices_dtype),
        )?;
        // The score head is trained, not a frozen matrix: back to the parameters' dtype.
        if let (Some(_), Some(dtype)) = (options.matrices_dtype, options.dtype) {
            model.score = cast_module(model.score, dtype);
        }
        Ok(model)
    }

    /// Starts a reward model from a language model (`*ForCausalLM`): its decoder, a fresh
    /// `score` head (normal, std `initializer_range`, as `transformers` initialises one), and
    /// its `lm_head` left out.
    pub fn load_reward_model_from_base<B: Backend>(
        &self,
        options: &LoadOptions,
        device: &B::Device,
    ) -> Result<RewardModel<B>> {
        if self.is_reward_model() {
            return Err(self.wrong_head("already a reward model", "load_reward_model"));
        }
        let mut decoder = CausalLm::new(&self.config.to_be_loaded(), device);
        decoder.lm_head = None;
        let unused = Unused {
            names: vec!["lm_head.weight"],
        };
        load_into(
            &mut decoder,
            &self.weights,
            &self.path,
            &unused,
            (options.dtype, options.matrices_dtype),
        )?;
        let score = new_score_head::<B>(&self.config, device);
        let score = match options.dtype {
            Some(dtype) => cast_module(score, dtype),
            None => score,
        };
        Ok(RewardModel {
            model: decoder.model,
            score,
        })
    }

    fn wrong_head(&self, what: &str, instead: &str) -> Error {
        Error::invalid(
            &self.path.join("config.json"),
            format!(
                "this checkpoint ({}) is {what}; use ModelFolder::{instead}",
                self.architecture().unwrap_or("no architectures given")
            ),
        )
    }

    /// Saves `model` as a folder `transformers` loads with `AutoModelForCausalLM`: this
    /// folder's `config.json` (all fields kept), the weights as one `model.safetensors`, and
    /// the tokenizer files.
    pub fn save_causal_lm<B: Backend>(
        &self,
        model: &CausalLm<B>,
        out: impl AsRef<Path>,
        options: &SaveOptions,
    ) -> Result<()> {
        save_causal_lm(model, &self.config, Some(self), out.as_ref(), options)
    }

    /// Saves a reward model as a folder `transformers` loads with
    /// `AutoModelForSequenceClassification` (one label).
    pub fn save_reward_model<B: Backend>(
        &self,
        model: &RewardModel<B>,
        out: impl AsRef<Path>,
        options: &SaveOptions,
    ) -> Result<()> {
        save_reward_model(model, &self.config, Some(self), out.as_ref(), options)
    }
}

/// Loads a PEFT adapter folder onto its base policy: the base folder (for its tokenizer and
/// for saving) and the model with the adapter's LoRA layers, trainable, everything else frozen.
pub fn load_adapted_causal_lm<B: Backend>(
    adapter: &AdapterFolder,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<(ModelFolder, CausalLm<B>)> {
    if adapter.is_reward_model() {
        return Err(Error::invalid(
            adapter.path(),
            "is a reward model's adapter (task_type SEQ_CLS); give it to the reward trainer",
        ));
    }
    let base = ModelFolder::open(adapter.base())?;
    let mut model = base
        .load_causal_lm::<B>(options, device)?
        .with_lora(adapter.config(), device);
    adapter.load_into(&mut model)?;
    Ok((base, model))
}

/// Loads a PEFT adapter folder of a reward model (`SEQ_CLS`, with its `score` head) onto its
/// base: a reward-model folder, or a language model whose head is replaced by the adapter's.
pub fn load_adapted_reward_model<B: Backend>(
    adapter: &AdapterFolder,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<(ModelFolder, RewardModel<B>)> {
    if !adapter.is_reward_model() {
        return Err(Error::invalid(
            adapter.path(),
            "is a language model's adapter (task_type CAUSAL_LM); give it to the DPO trainer",
        ));
    }
    let base = ModelFolder::open(adapter.base())?;
    let model = match base.is_reward_model() {
        true => base.load_reward_model::<B>(options, device)?,
        false => base.load_reward_model_from_base::<B>(options, device)?,
    };
    let mut model = model.with_lora(adapter.config(), device);
    adapter.load_into(&mut model)?;
    Ok((base, model))
}

/// Saves a policy as a Hugging Face folder. `source`: the folder it was loaded from, whose
/// config fields and tokenizer files are kept (`None` for a model built in code: a
/// `config.json` is written from `config`).
pub fn save_causal_lm<B: Backend>(
    model: &CausalLm<B>,
    config: &DecoderConfig,
    source: Option<&ModelFolder>,
    out: &Path,
    options: &SaveOptions,
) -> Result<()> {
    let parameters = model.model.embed_tokens.weight.val().dtype();
    let (mut json, dtype) = folder_config(config, source, "ForCausalLM", parameters, options);
    // A reward model's label maps do not belong to a language model.
    if let Value::Object(map) = &mut json {
        map.remove("id2label");
        map.remove("label2id");
    }
    write_folder(out, &json, source)?;
    // A full folder of an adapted model holds the merged weights (PEFT's `merge_and_unload`).
    match model.model.has_lora() {
        true => save_from(
            &model.clone().merge_lora(),
            &out.join("model.safetensors"),
            Some(dtype),
        ),
        false => save_from(model, &out.join("model.safetensors"), Some(dtype)),
    }
}

/// Saves a reward model as a Hugging Face folder (see [`save_causal_lm`] for `source`).
/// `transformers` needs a `pad_token_id` to score batches; when the config has none, the EOS
/// id is recorded (this crate finds the last token from the attention mask either way).
pub fn save_reward_model<B: Backend>(
    model: &RewardModel<B>,
    config: &DecoderConfig,
    source: Option<&ModelFolder>,
    out: &Path,
    options: &SaveOptions,
) -> Result<()> {
    let parameters = model.model.embed_tokens.weight.val().dtype();
    let (mut json, dtype) = folder_config(
        config,
        source,
        "ForSequenceClassification",
        parameters,
        options,
    );
    if let Value::Object(map) = &mut json {
        map.insert("id2label".into(), serde_json::json!({"0": "LABEL_0"}));
        map.insert("label2id".into(), serde_json::json!({"LABEL_0": 0}));
        if map.get("pad_token_id").is_none_or(Value::is_null) {
            let eos = map
                .get("eos_token_id")
                .map(|e| e.get(0).unwrap_or(e).clone());
            if let Some(eos) = eos {
                map.insert("pad_token_id".into(), eos);
            }
        }
    }
    write_folder(out, &json, source)?;
    match model.model.has_lora() {
        true => save_from(
            &model.clone().merge_lora(),
            &out.join("model.safetensors"),
            Some(dtype),
        ),
        false => save_from(model, &out.join("model.safetensors"), Some(dtype)),
    }
}

/// The `config.json` of a saved folder (architecture `{Family}{class_suffix}`) and the dtype
/// the weights are written in.
fn folder_config(
    config: &DecoderConfig,
    source: Option<&ModelFolder>,
    class_suffix: &str,
    parameters: DType,
    options: &SaveOptions,
) -> (Value, DType) {
    let dtype = options.dtype.unwrap_or(parameters);
    let architecture = format!("{}{class_suffix}", config.family.class_prefix());
    let json = config::config_to_save(
        config,
        source.map(|s| &s.raw_config),
        &architecture,
        dtype_name(dtype),
    );
    (json, dtype)
}

fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::F64 => "float64",
        _ => "float32",
    }
}

/// Creates `out` with `config.json` and the source's tokenizer files.
fn write_folder(out: &Path, json: &Value, source: Option<&ModelFolder>) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    // The weights are written as one file; a shard index left from an earlier save would
    // point loaders at stale shards.
    let stale_index = out.join("model.safetensors.index.json");
    if stale_index.is_file() {
        std::fs::remove_file(&stale_index).map_err(|e| Error::io(&stale_index, e))?;
    }
    let config_path = out.join("config.json");
    let text = serde_json::to_string_pretty(json).expect("JSON values serialise");
    std::fs::write(&config_path, text + "\n").map_err(|e| Error::io(&config_path, e))?;
    if let Some(source) = source {
        for name in TOKENIZER_FILES {
            let from = source.path.join(name);
            if from.is_file() && from != out.join(name) {
                std::fs::copy(&from, out.join(name)).map_err(|e| Error::io(&from, e))?;
            }
        }
    }
    Ok(())
}

/// A module with its float parameters cast to `dtype`.
fn cast_module<B: Backend, M: burn::module::Module<B>>(module: M, dtype: DType) -> M {
    struct Cast(DType);
    impl<B: Backend> burn::module::ModuleMapper<B> for Cast {
        fn map_float<const D: usize>(
            &mut self,
            param: burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) -> burn::module::Param<burn::tensor::Tensor<B, D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}
