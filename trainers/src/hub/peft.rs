//! PEFT adapter folders: what `PeftModel.save_pretrained` writes for a LoRA adapter and
//! `PeftModel.from_pretrained(base, dir)` reads back.
//!
//! - `adapter_config.json`: `peft_type: "LORA"`, `r`, `lora_alpha`, `lora_dropout`,
//!   `target_modules`, `use_rslora`, `task_type` (`CAUSAL_LM` or `SEQ_CLS`),
//!   `modules_to_save` (the reward model's `score`), and `base_model_name_or_path`;
//! - `adapter_model.safetensors`: `base_model.model.<module>.lora_A.weight` `[r, in]` and
//!   `...lora_B.weight` `[out, r]` per adapted projection, and `base_model.model.score.weight`
//!   for a reward model.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn_store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::model::{LoraConfig, LoraTarget};

/// The adapter configuration's file name.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The adapter weights' file name.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// What the adapted model is, in PEFT's words (`task_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterTask {
    /// A policy (`CAUSAL_LM`).
    CausalLm,
    /// A reward model (`SEQ_CLS`, one label, with its `score` head saved in full).
    RewardModel,
}

impl AdapterTask {
    fn peft_name(self) -> &'static str {
        match self {
            AdapterTask::CausalLm => "CAUSAL_LM",
            AdapterTask::RewardModel => "SEQ_CLS",
        }
    }

    /// The modules saved in full beside the adapters (PEFT's `modules_to_save`).
    fn modules_to_save(self) -> Vec<&'static str> {
        match self {
            AdapterTask::CausalLm => vec![],
            AdapterTask::RewardModel => vec!["score"],
        }
    }
}

/// A PEFT LoRA adapter folder, opened: its configuration read and checked, its base found.
#[derive(Debug, Clone)]
pub struct AdapterFolder {
    path: PathBuf,
    config: LoraConfig,
    task: AdapterTask,
    base: PathBuf,
}

/// Whether `path` is a PEFT adapter folder (it has an `adapter_config.json`).
pub fn is_adapter_folder(path: &Path) -> bool {
    path.join(ADAPTER_CONFIG).is_file()
}

impl AdapterFolder {
    /// Opens `path`: reads `adapter_config.json`, refuses what this decoder cannot apply
    /// exactly (DoRA, per-layer ranks, other adapter types), and finds the base model folder
    /// that `base_model_name_or_path` names (as given, or relative to the adapter's folder).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let config_path = path.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(&config_path, format!("not valid JSON: {e}")))?;
        let bad = |message: String| Error::invalid(&config_path, message);
        let (config, task) = read_adapter_config(&json).map_err(bad)?;
        let named = json
            .get("base_model_name_or_path")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::invalid(
                    &config_path,
                    "has no \"base_model_name_or_path\": set it to the base model's folder",
                )
            })?;
        let base = [PathBuf::from(named), path.join(named)]
            .into_iter()
            .find(|candidate| candidate.join("config.json").is_file())
            .ok_or_else(|| {
                Error::invalid(
                    &config_path,
                    format!(
                        "names the base model \"{named}\", which is not a model folder here \
                         (nor relative to the adapter); download it and set \
                         \"base_model_name_or_path\" to its folder"
                    ),
                )
            })?;
        if !path.join(ADAPTER_WEIGHTS).is_file() {
            return Err(Error::invalid(
                &path,
                format!("has {ADAPTER_CONFIG} but no {ADAPTER_WEIGHTS}"),
            ));
        }
        Ok(Self {
            path,
            config,
            task,
            base,
        })
    }

    /// The adapter's folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The adapter's LoRA settings.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Whether the adapter belongs to a reward model (`task_type: "SEQ_CLS"`).
    pub fn is_reward_model(&self) -> bool {
        self.task == AdapterTask::RewardModel
    }

    /// The base model's folder.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Loads the adapter's tensors into `model`, which must carry adapters on exactly the
    /// adapter's targets (built with [`Self::config`]). Every adapter tensor of the model must
    /// be in the file and every tensor of the file must be used.
    pub fn load_into<B: Backend, M: ModuleSnapshot<B>>(&self, model: &mut M) -> Result<()> {
        let file = self.path.join(ADAPTER_WEIGHTS);
        let mut store = SafetensorsStore::from_file(&file)
            .remap(peft_to_burn_names())
            .with_from_adapter(PyTorchToBurnAdapter)
            .allow_partial(true);
        let result = model
            .load_from(&mut store)
            .map_err(|e| Error::invalid(&file, format!("not a readable safetensors file: {e}")))?;
        let is_trained = |path: &str| path.contains(".lora.") || path.starts_with("score.");
        let missing: Vec<&str> = result
            .missing
            .iter()
            .map(|(path, _)| path.as_str())
            .filter(|path| is_trained(path))
            .collect();
        let mut problems = Vec::new();
        if !missing.is_empty() {
            problems.push(format!("missing adapter tensors: {}", missing.join(", ")));
        }
        if !result.unused.is_empty() {
            problems.push(format!(
                "tensors that match no adapted module: {}",
                result.unused.join(", ")
            ));
        }
        if !result.errors.is_empty() {
            problems.push(format!("{:?}", result.errors));
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(Error::Weights {
                path: file,
                message: format!(
                    "the adapter does not fit the base model: {}",
                    problems.join("; ")
                ),
            }),
        }
    }
}

/// Reads the LoRA settings of an `adapter_config.json`, or says what this decoder cannot
/// apply.
fn read_adapter_config(json: &Value) -> std::result::Result<(LoraConfig, AdapterTask), String> {
    let peft_type = json.get("peft_type").and_then(Value::as_str).unwrap_or("");
    if peft_type != "LORA" {
        return Err(format!(
            "has peft_type \"{peft_type}\"; only LoRA adapters (\"LORA\") are read"
        ));
    }
    let task = match json.get("task_type").and_then(Value::as_str) {
        Some("SEQ_CLS") => AdapterTask::RewardModel,
        Some("CAUSAL_LM") | None => AdapterTask::CausalLm,
        Some(other) => {
            return Err(format!(
                "has task_type \"{other}\"; CAUSAL_LM and SEQ_CLS are read"
            ))
        }
    };
    for (key, allowed) in [
        ("use_dora", json!(false)),
        ("fan_in_fan_out", json!(false)),
        ("bias", json!("none")),
        ("lora_bias", json!(false)),
    ] {
        if json.get(key).is_some_and(|v| !v.is_null() && *v != allowed) {
            return Err(format!("has {key} = {}; only {allowed} is read", json[key]));
        }
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if json
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty())
        {
            return Err(format!("has a {key}; per-module ranks are not read"));
        }
    }
    if json
        .get("layers_to_transform")
        .is_some_and(|v| !v.is_null())
    {
        return Err("has layers_to_transform; adapters on every layer are read".into());
    }
    let rank = json.get("r").and_then(Value::as_u64).unwrap_or(0) as usize;
    let targets = read_targets(json.get("target_modules"))?;
    let saved: Vec<String> = json
        .get("modules_to_save")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let extra: Vec<&String> = saved
        .iter()
        .filter(|m| !task.modules_to_save().contains(&m.as_str()) && *m != "classifier")
        .collect();
    if !extra.is_empty() {
        return Err(format!(
            "saves {extra:?} in full (modules_to_save); only a reward model's score head is read"
        ));
    }
    let config = LoraConfig {
        rank,
        alpha: json
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .unwrap_or(8.0),
        dropout: json
            .get("lora_dropout")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        use_rslora: json
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        targets,
    };
    config.validate().map_err(|e| e.replace("--lora-", ""))?;
    Ok((config, task))
}

fn read_targets(value: Option<&Value>) -> std::result::Result<Vec<LoraTarget>, String> {
    let names = value.and_then(Value::as_array).ok_or_else(|| {
        "needs target_modules as a list of module names (a regular expression is not read)"
            .to_string()
    })?;
    let mut targets = Vec::new();
    for name in names {
        let name = name.as_str().unwrap_or_default();
        let target = LoraTarget::from_name(name).ok_or_else(|| {
            format!("targets \"{name}\", which this decoder does not have (it has q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)")
        })?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    // The order of a decoder layer, whatever the file's (PEFT writes a set).
    targets.sort_by_key(|t| LoraTarget::ALL.iter().position(|a| a == t));
    Ok(targets)
}

/// Writes `model`'s adapters (and, for a reward model, its `score` head) as a PEFT adapter
/// folder in `out`. `base`: what `base_model_name_or_path` records (the base's folder).
pub fn save_adapter<B: Backend, M: ModuleSnapshot<B>>(
    model: &M,
    config: &LoraConfig,
    task: AdapterTask,
    base: &str,
    out: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let targets: Vec<&str> = config.targets.iter().map(|t| t.name()).collect();
    let modules_to_save = task.modules_to_save();
    let json = json!({
        "alpha_pattern": {},
        "auto_mapping": null,
        "base_model_name_or_path": base,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "layers_pattern": null,
        "layers_to_transform": null,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "modules_to_save": if modules_to_save.is_empty() { Value::Null } else { json!(modules_to_save) },
        "peft_type": "LORA",
        "r": config.rank,
        "rank_pattern": {},
        "revision": null,
        "target_modules": targets,
        "task_type": task.peft_name(),
        "use_dora": false,
        "use_rslora": config.use_rslora,
    });
    let config_path = out.join(ADAPTER_CONFIG);
    let text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
    std::fs::write(&config_path, text + "\n").map_err(|e| Error::io(&config_path, e))?;

    let file = out.join(ADAPTER_WEIGHTS);
    let mut store = SafetensorsStore::from_file(&file)
        .overwrite(true)
        .with_regex(r"(\.lora\.lora_[ab]\.weight$|^score\.)")
        .remap(burn_to_peft_names())
        .clear_metadata()
        .metadata("format", "pt")
        .with_to_adapter(BurnToPyTorchAdapter);
    model
        .save_into(&mut store)
        .map_err(|e| Error::invalid(&file, format!("could not be written: {e}")))
}

/// burn's adapter paths (`...q_proj.lora.lora_a.weight`) to PEFT's names.
fn burn_to_peft_names() -> KeyRemapper {
    KeyRemapper::new()
        .add_pattern(
            r"^(.*)\.lora\.lora_a\.weight$",
            "base_model.model.$1.lora_A.weight",
        )
        .expect("a valid pattern")
        .add_pattern(
            r"^(.*)\.lora\.lora_b\.weight$",
            "base_model.model.$1.lora_B.weight",
        )
        .expect("a valid pattern")
        .add_pattern(r"^score\.(.*)$", "base_model.model.score.$1")
        .expect("a valid pattern")
}

/// PEFT's names to burn's adapter paths.
fn peft_to_burn_names() -> KeyRemapper {
    KeyRemapper::new()
        .add_pattern(
            r"^base_model\.model\.(.*)\.lora_A(\.default)?\.weight$",
            "$1.lora.lora_a.weight",
        )
        .expect("a valid pattern")
        .add_pattern(
            r"^base_model\.model\.(.*)\.lora_B(\.default)?\.weight$",
            "$1.lora.lora_b.weight",
        )
        .expect("a valid pattern")
        .add_pattern(
            r"^base_model\.model\.score(\.modules_to_save)?(\.default)?\.(.*)$",
            "score.$3",
        )
        .expect("a valid pattern")
}
