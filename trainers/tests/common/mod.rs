//! Shared helpers: the fixture folders and what `transformers` computed on them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

pub type B = Flex;

/// `tests/fixtures/hf/NAME`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

/// The tensors of a safetensors file, by name.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    pub fn read(path: &Path) -> Self {
        Self {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("a safetensors file")
    }

    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.view().names().into_iter().map(String::from).collect();
        names.sort();
        names
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.view().tensor(name).unwrap().shape().to_vec()
    }

    pub fn dtype(&self, name: &str) -> Dtype {
        self.view().tensor(name).unwrap().dtype()
    }

    pub fn raw(&self, name: &str) -> Vec<u8> {
        self.view().tensor(name).unwrap().data().to_vec()
    }

    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let view = self.view();
        let t = view
            .tensor(name)
            .unwrap_or_else(|_| panic!("no tensor {name}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let values = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (values, t.shape().to_vec())
    }

    pub fn i64(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let view = self.view();
        let t = view
            .tensor(name)
            .unwrap_or_else(|_| panic!("no tensor {name}"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        let values = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (values, t.shape().to_vec())
    }

    /// `input_ids_{side}` and `attention_mask_{side}`.
    pub fn batch(&self, side: &str) -> Batch {
        let device = Default::default();
        let (ids, shape) = self.i64(&format!("input_ids_{side}"));
        let (mask, _) = self.i64(&format!("attention_mask_{side}"));
        let [batch, len] = [shape[0], shape[1]];
        let ids = Tensor::from_data(TensorData::new(ids, [batch, len]), &device);
        let rows: Vec<Vec<bool>> = mask
            .chunks(len)
            .map(|r| r.iter().map(|&m| m == 1).collect())
            .collect();
        let flat: Vec<bool> = rows.concat();
        let mask = Tensor::from_data(TensorData::new(flat, [batch, len]), &device);
        Batch { ids, mask, rows }
    }
}

/// A fixture batch: token ids, attention mask, and the mask as rows of booleans.
pub struct Batch {
    pub ids: Tensor<B, 2, Int>,
    pub mask: Tensor<B, 2, Bool>,
    pub rows: Vec<Vec<bool>>,
}

/// The largest difference between `actual` `[batch, len, width]` and `expected` over the
/// positions where `mask` is true.
pub fn max_diff_at_real_positions(
    actual: Tensor<B, 3>,
    expected: &[f32],
    mask: &[Vec<bool>],
) -> f32 {
    let [_, len, width] = actual.dims();
    let actual = actual.into_data().to_vec::<f32>().unwrap();
    assert_eq!(actual.len(), expected.len());
    let mut worst = 0.0f32;
    for (b, row) in mask.iter().enumerate() {
        for (t, &real) in row.iter().enumerate() {
            if !real {
                continue;
            }
            let start = (b * len + t) * width;
            for i in start..start + width {
                let diff = (actual[i] - expected[i]).abs();
                assert!(diff.is_finite(), "non-finite value at [{b}, {t}]");
                worst = worst.max(diff);
            }
        }
    }
    worst
}

/// A scratch copy of a fixture folder, removed when dropped.
pub struct ScratchFolder(pub PathBuf);

impl ScratchFolder {
    pub fn copy_of(name: &str, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "otpref-trainers-{}-{name}-{tag}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(fixture(name)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        Self(dir)
    }

    pub fn empty(tag: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("otpref-trainers-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    /// Edits `config.json` with `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = self.0.join("config.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        edit(&mut json);
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
}

impl Drop for ScratchFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a trainer command and checks that it succeeded (printing its output if not).
pub fn run_ok(command: &mut std::process::Command) -> std::process::Output {
    let output = command.output().expect("the trainer runs");
    assert!(
        output.status.success(),
        "trainer failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The records of `OUTPUT/metrics.jsonl`.
pub fn metrics(output: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(output.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs a trainer with bad input in a scratch output folder: it must exit with code 2 before
/// training, without a panic. Returns its stderr.
pub fn failure(program: &str, args: &[&str]) -> String {
    let name = std::path::Path::new(program)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let tag: String = args
        .join("_")
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let out = ScratchFolder::empty(&format!("{name}-bad-{tag}"));
    let output = std::process::Command::new(program)
        .args(["--output", out.0.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{args:?}");
    assert!(
        !out.0.join("metrics.jsonl").exists(),
        "{args:?}: training started"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The saved model's tensors (`OUTPUT/model/model.safetensors`) as f32 values, by name.
pub fn model_floats(run: &Path) -> Vec<(String, Vec<f32>)> {
    let file = Expected::read(&run.join("model/model.safetensors"));
    file.names()
        .into_iter()
        .map(|n| {
            let floats = file
                .raw(&n)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n, floats)
        })
        .collect()
}

/// Waits until `OUTPUT/metrics.jsonl` has `records` lines (or 120 s pass).
pub fn wait_for_records(output: &Path, records: usize) {
    let path = output.join("metrics.jsonl");
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(120) {
        let lines = std::fs::read_to_string(&path).map_or(0, |t| t.lines().count());
        if lines >= records {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("{} never reached {records} records", path.display());
}

/// The flags of a run on the smallest built-in model (width 16, one layer) with `train` and
/// `eval` built-in pairs, writing to `output`.
pub fn tiny_builtin(output: &Path, train: usize, eval: usize) -> Vec<String> {
    [
        "--output",
        output.to_str().unwrap(),
        "--builtin-hidden",
        "16",
        "--builtin-layers",
        "1",
        "--builtin-train-pairs",
        &train.to_string(),
        "--builtin-eval-pairs",
        &eval.to_string(),
    ]
    .map(String::from)
    .to_vec()
}
