//! Safetensors weights in, safetensors weights out, through burn-store.
//!
//! Loading checks the checkpoint against the model that `config.json` describes before any
//! tensor is applied: every missing, unexpected or mis-shaped tensor is reported by its
//! Hugging Face name, so a model is never half loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use burn_store::{
    BurnToPyTorchAdapter, ChainAdapter, KeyRemapper, ModuleAdapter, ModuleSnapshot, ModuleStore,
    PyTorchToBurnAdapter, SafetensorsStore, TensorSnapshot,
};

use crate::error::{Error, Result};

/// How many names an error lists before it says "and N more".
const NAMES_SHOWN: usize = 8;

/// The safetensors files of a model folder: one `model.safetensors`, or the shards that
/// `model.safetensors.index.json` lists.
#[derive(Debug, Clone)]
pub(crate) struct WeightFiles {
    files: Vec<PathBuf>,
    /// For sharded checkpoints: which shard the index says holds each tensor.
    index: Option<(PathBuf, BTreeMap<String, String>)>,
}

impl WeightFiles {
    pub(crate) fn find(folder: &Path) -> Result<Self> {
        let single = folder.join("model.safetensors");
        if single.is_file() {
            return Ok(Self {
                files: vec![single],
                index: None,
            });
        }
        let index_path = folder.join("model.safetensors.index.json");
        if !index_path.is_file() {
            return Err(Error::invalid(
                folder,
                "no model.safetensors or model.safetensors.index.json in this folder; only \
                 safetensors checkpoints are read (convert a pytorch_model.bin with \
                 transformers: `AutoModel.from_pretrained(dir).save_pretrained(dir)`)",
            ));
        }
        let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(&index_path, format!("not valid JSON: {e}")))?;
        let weight_map: BTreeMap<String, String> = json
            .get("weight_map")
            .cloned()
            .and_then(|m| serde_json::from_value(m).ok())
            .ok_or_else(|| {
                Error::invalid(
                    &index_path,
                    "needs a \"weight_map\" object from tensor names to shard file names",
                )
            })?;
        let shards: BTreeSet<&String> = weight_map.values().collect();
        let mut files = Vec::new();
        for shard in shards {
            let path = folder.join(shard);
            if !path.is_file() {
                return Err(Error::invalid(
                    &index_path,
                    format!("lists shard {shard}, which is missing from the folder"),
                ));
            }
            files.push(path);
        }
        Ok(Self {
            files,
            index: Some((index_path, weight_map)),
        })
    }

    /// Every tensor of every file, by name, checked against the shard index.
    fn snapshots(&self) -> Result<BTreeMap<String, (PathBuf, TensorSnapshot)>> {
        let mut all = BTreeMap::new();
        for file in &self.files {
            let mut store = SafetensorsStore::from_file(file);
            let snapshots = store.get_all_snapshots().map_err(|e| {
                Error::invalid(file, format!("not a readable safetensors file: {e}"))
            })?;
            for (name, snapshot) in snapshots {
                if let Some((first, _)) = all.insert(name.clone(), (file.clone(), snapshot.clone()))
                {
                    return Err(Error::invalid(
                        file,
                        format!("tensor {name} is also in {}", first.display()),
                    ));
                }
            }
        }
        if let Some((index_path, weight_map)) = &self.index {
            for (name, shard) in weight_map {
                let in_shard = all
                    .get(name)
                    .is_some_and(|(file, _)| file.file_name().is_some_and(|f| f == shard.as_str()));
                if !in_shard {
                    return Err(Error::invalid(
                        index_path,
                        format!("says tensor {name} is in {shard}, but it is not there"),
                    ));
                }
            }
        }
        Ok(all)
    }
}

/// Which checkpoint tensors a load may leave unused, and why.
#[derive(Debug, Clone, Default)]
pub(crate) struct Unused {
    /// Tensor names to ignore when present (e.g. `lm_head.weight` when the head is tied).
    pub names: Vec<&'static str>,
}

/// Loads `files` into `module`, after checking that the checkpoint holds exactly the module's
/// tensors (save those in `unused`) with the module's shapes. `dtypes`: the parameters'
/// dtype (`None` keeps the stored one), and the matrices' where it differs (see
/// `LoadOptions::matrices_dtype`).
pub(crate) fn load_into<B: Backend, M: ModuleSnapshot<B>>(
    module: &mut M,
    files: &WeightFiles,
    folder: &Path,
    unused: &Unused,
    dtypes: (Option<DType>, Option<DType>),
) -> Result<()> {
    let expected = expected_tensors(module);
    let mut found = files.snapshots()?;
    found.retain(|name, _| {
        !(unused.names.contains(&name.as_str()) || name.ends_with("rotary_emb.inv_freq"))
    });

    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !found.contains_key(*k))
        .collect();
    let unexpected: Vec<&String> = found
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("missing tensors: {}", list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected tensors: {}", list(&unexpected)));
    }
    for (name, (file, snapshot)) in &found {
        if let Some((_, shape)) = expected.get(name) {
            if snapshot.shape.to_vec() != *shape {
                problems.push(format!(
                    "{name} in {} has shape {:?}, config.json implies {shape:?}",
                    file_name(file),
                    snapshot.shape.to_vec()
                ));
            }
        }
        if !matches!(
            snapshot.dtype,
            DType::F32 | DType::F16 | DType::BF16 | DType::F64
        ) {
            problems.push(format!(
                "{name} in {} is stored as {:?}; only float tensors (f32, f16, bf16) are read",
                file_name(file),
                snapshot.dtype
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::Weights {
            path: folder.to_path_buf(),
            message: format!(
                "the checkpoint does not match config.json: {}",
                problems.join("; ")
            ),
        });
    }

    // Rename to burn's paths (RMSNorm's `weight` is burn's `gamma`) and apply.
    let snapshots = found
        .into_iter()
        .map(|(name, (_, s))| {
            let path = expected[&name].0.split('.').map(String::from).collect();
            TensorSnapshot::from_closure(
                s.clone_data_fn(),
                s.dtype,
                s.shape.clone(),
                path,
                s.container_stack.clone().unwrap_or_default(),
                s.tensor_id.unwrap_or_default(),
            )
        })
        .collect();
    let (dtype, matrices) = dtypes;
    let adapter = ChainAdapter::new(PyTorchToBurnAdapter, CastFloats { dtype, matrices });
    let result = module.apply(snapshots, None, Some(Box::new(adapter)), false);
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(Error::Weights {
            path: folder.to_path_buf(),
            message: format!("loading failed after the checks passed: {result}"),
        });
    }
    Ok(())
}

/// Writes `module`'s tensors to `path` with Hugging Face names and layouts, cast to `dtype`
/// (`None`: as they are).
pub(crate) fn save_from<B: Backend, M: ModuleSnapshot<B>>(
    module: &M,
    path: &Path,
    dtype: Option<DType>,
) -> Result<()> {
    let names = KeyRemapper::new()
        .add_pattern(r"^(.*norm)\.gamma$", "$1.weight")
        .expect("a valid pattern")
        .add_pattern(r"^(.*_proj)\.base\.(weight|bias)$", "$1.$2")
        .expect("a valid pattern");
    let mut store = SafetensorsStore::from_file(path)
        .overwrite(true)
        .remap(names)
        // transformers refuses safetensors files without `format: pt` metadata.
        .clear_metadata()
        .metadata("format", "pt")
        .with_to_adapter(ChainAdapter::new(
            BurnToPyTorchAdapter,
            CastFloats {
                dtype,
                matrices: None,
            },
        ));
    module
        .save_into(&mut store)
        .map_err(|e| Error::invalid(path, format!("could not be written: {e}")))
}

/// Casts float tensors to one dtype (bf16/f16 checkpoints into f32 parameters, or back).
/// `None` leaves them as they are. burn-store 0.21's `HalfPrecisionAdapter` only knows f16.
#[derive(Debug, Clone, Copy)]
struct CastFloats {
    /// Every float tensor's dtype (`None`: as stored).
    dtype: Option<DType>,
    /// The 2-D tensors' dtype, where it differs (`None`: `dtype`).
    matrices: Option<DType>,
}

impl ModuleAdapter for CastFloats {
    fn adapt(&self, snapshot: &TensorSnapshot) -> TensorSnapshot {
        let target = match snapshot.shape.len() {
            2 => self.matrices.or(self.dtype),
            _ => self.dtype,
        };
        let Some(target) = target else {
            return snapshot.clone();
        };
        if snapshot.dtype == target || !snapshot.dtype.is_float() {
            return snapshot.clone();
        }
        let data = snapshot.clone_data_fn();
        TensorSnapshot::from_closure(
            Rc::new(move || Ok(narrowed(data()?.convert_dtype(target)))),
            target,
            snapshot.shape.clone(),
            snapshot.path_stack.clone().unwrap_or_default(),
            snapshot.container_stack.clone().unwrap_or_default(),
            snapshot.tensor_id.unwrap_or_default(),
        )
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(*self)
    }
}

/// The module's tensors as a Hugging Face checkpoint names and shapes them (linear weights
/// transposed, as burn-store's PyTorch adapter does), by name: the burn path and the shape.
/// Read without initialising a parameter: burn-store's `collect` would draw every one (the
/// whole model in f32) just before the load replaces them.
fn expected_tensors<B: Backend, M: Module<B>>(
    module: &M,
) -> BTreeMap<String, (String, Vec<usize>)> {
    #[derive(Default)]
    struct Shapes {
        path: Vec<String>,
        containers: Vec<String>,
        found: BTreeMap<String, (String, Vec<usize>)>,
    }
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.push(name.to_string());
            self.containers.push(container_type.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
            self.containers.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let burn_path = self.path.join(".");
            let mut shape = param.lazy_shape().to_vec();
            // The innermost user-defined module holding the parameter, as burn-store finds it.
            let module = self
                .containers
                .iter()
                .rev()
                .find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"));
            if module.is_some_and(|m| m == "Struct:Linear")
                && self.path.last().is_some_and(|p| p == "weight")
                && shape.len() == 2
            {
                shape.reverse();
            }
            self.found.insert(hf_name(&burn_path), (burn_path, shape));
        }
    }
    let mut shapes = Shapes::default();
    module.visit(&mut shapes);
    shapes.found
}

/// `data` in a buffer of its own size: converted in place to a narrower dtype (f32 to bf16),
/// it would keep the wider buffer, and the model would hold its matrices at f32's size.
fn narrowed(data: TensorData) -> TensorData {
    let (shape, dtype) = (data.shape.clone(), data.dtype);
    TensorData::from_bytes_vec(data.as_bytes().to_vec(), shape, dtype)
}

/// The Hugging Face name of a burn parameter path: RMSNorm's `gamma` is `weight` there, and
/// a projection's base weights (`q_proj.base.weight`, beside its LoRA adapter) are the
/// projection's own (`q_proj.weight`).
fn hf_name(burn_path: &str) -> String {
    if let Some(norm) = burn_path.strip_suffix(".gamma") {
        if norm.ends_with("norm") {
            return format!("{norm}.weight");
        }
    }
    for suffix in [".base.weight", ".base.bias"] {
        if let Some(projection) = burn_path.strip_suffix(suffix) {
            return format!("{projection}{}", &suffix[".base".len()..]);
        }
    }
    burn_path.to_string()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn list(names: &[&String]) -> String {
    let shown: Vec<&str> = names.iter().take(NAMES_SHOWN).map(|s| s.as_str()).collect();
    match names.len().saturating_sub(NAMES_SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}
