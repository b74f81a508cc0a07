//! LoRA adapters (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") on the
//! decoder's projections, as PEFT's `LoraLayer` computes them:
//!
//! ```text
//! y = base(x) + scaling · B(A(dropout(x)))     A: in → r,  B: r → out,  B = 0 at the start
//! scaling = alpha / r     (rank-stabilised LoRA: alpha / √r)
//! ```
//!
//! burn 0.21 has no LoRA (it arrives in burn-nn's `lora` module later); this one is written in
//! the shape of that API (`LoraConfig`, a `LoraLinear` whose `base` is the frozen `Linear`,
//! `merge`), so that it can be replaced by burn's once the pin moves. Unlike burn's, the adapter
//! is optional (`LoraLinear::lora`), so one model type serves full fine-tuning, LoRA, and the
//! base with its adapters switched off (the DPO reference, as TRL gets it from PEFT).

use burn::module::{Module, ModuleMapper, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{backend::Backend, DType, Tensor};
use serde::{Deserialize, Serialize};

use super::projection;

/// A projection LoRA can adapt, by PEFT's module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum LoraTarget {
    /// `self_attn.q_proj`.
    QProj,
    /// `self_attn.k_proj`.
    KProj,
    /// `self_attn.v_proj`.
    VProj,
    /// `self_attn.o_proj`.
    OProj,
    /// `mlp.gate_proj`.
    GateProj,
    /// `mlp.up_proj`.
    UpProj,
    /// `mlp.down_proj`.
    DownProj,
}

impl LoraTarget {
    /// Every target, in the order of a decoder layer.
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    /// The attention projections: the trainers' default (`q_proj,k_proj,v_proj,o_proj`).
    pub const ATTENTION: [LoraTarget; 4] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
    ];

    /// PEFT's (and `transformers`') module name.
    pub fn name(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OProj => "o_proj",
            LoraTarget::GateProj => "gate_proj",
            LoraTarget::UpProj => "up_proj",
            LoraTarget::DownProj => "down_proj",
        }
    }

    /// The target of a PEFT module name (`None` for a module this decoder does not have).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Where the module sits in a decoder layer (`self_attn.q_proj`, `mlp.up_proj`).
    pub fn path_in_layer(self) -> String {
        let block = match self {
            LoraTarget::QProj | LoraTarget::KProj | LoraTarget::VProj | LoraTarget::OProj => {
                "self_attn"
            }
            _ => "mlp",
        };
        format!("{block}.{}", self.name())
    }
}

/// The settings of LoRA adapters (PEFT's `LoraConfig`, the fields this decoder uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// The rank `r` of the update (at least 1).
    pub rank: usize,
    /// The scaling numerator `alpha` (PEFT's `lora_alpha`).
    pub alpha: f64,
    /// Dropout on the adapter's input while training (PEFT's `lora_dropout`).
    pub dropout: f64,
    /// Rank-stabilised scaling `alpha / √r` instead of `alpha / r` (PEFT's `use_rslora`).
    pub use_rslora: bool,
    /// The projections that get an adapter.
    pub targets: Vec<LoraTarget>,
}

impl LoraConfig {
    /// Rank `rank` on the attention projections, PEFT's defaults otherwise (alpha 8, no
    /// dropout, plain scaling).
    pub fn new(rank: usize) -> Self {
        Self {
            rank,
            alpha: 8.0,
            dropout: 0.0,
            use_rslora: false,
            targets: LoraTarget::ATTENTION.to_vec(),
        }
    }

    /// The factor the update is multiplied by.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Checks the settings; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.rank == 0 {
            return Err("--lora-rank must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("--lora-alpha must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "--lora-dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        if self.targets.is_empty() {
            return Err("--lora-targets needs at least one module name".into());
        }
        Ok(())
    }
}

/// The trained part of an adapted projection: `A` (`in → r`) and `B` (`r → out`), stored as
/// burn `Linear`s so that saving them in PyTorch's layout (PEFT's `lora_A.weight` `[r, in]`,
/// `lora_B.weight` `[out, r]`) is the usual transpose.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// The down-projection `A`.
    pub lora_a: Linear<B>,
    /// The up-projection `B` (zero when fresh, so a fresh adapter changes nothing).
    pub lora_b: Linear<B>,
    /// Dropout on the adapter's input (active only with autodiff, i.e. in training).
    pub dropout: Dropout,
    /// `alpha / r` (or `alpha / √r`).
    pub scaling: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// A fresh adapter for a `d_in → d_out` projection, initialised as PEFT does by default:
    /// `A` Kaiming-uniform with bound `1/√d_in` (burn's `Linear` default is the same), `B` zero.
    pub fn new(d_in: usize, d_out: usize, config: &LoraConfig, device: &B::Device) -> Self {
        Self {
            lora_a: LinearConfig::new(d_in, config.rank)
                .with_bias(false)
                .init(device),
            lora_b: LinearConfig::new(config.rank, d_out)
                .with_bias(false)
                .with_initializer(Initializer::Zeros)
                .init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            scaling: config.scaling(),
        }
    }

    /// `scaling · B(A(dropout(x)))`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let down = projection::forward(&self.lora_a, self.dropout.forward(x));
        projection::forward(&self.lora_b, down).mul_scalar(self.scaling)
    }

    /// The update `scaling · A·B` as a `[d_in, d_out]` weight (burn's `Linear` layout).
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.lora_a
            .weight
            .val()
            .matmul(self.lora_b.weight.val())
            .mul_scalar(self.scaling)
    }

    /// The adapter with its parameters trainable (a fresh or loaded adapter inside a frozen
    /// model).
    pub fn trainable(self) -> Self {
        let train = |p: Param<Tensor<B, 2>>| p.set_require_grad(true);
        Self {
            lora_a: Linear {
                weight: train(self.lora_a.weight),
                bias: None,
            },
            lora_b: Linear {
                weight: train(self.lora_b.weight),
                bias: None,
            },
            ..self
        }
    }
}

/// A projection with an optional LoRA adapter beside its (then frozen) base weights.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The base projection (`q_proj.weight` in a checkpoint).
    pub base: Linear<B>,
    /// The adapter, when LoRA is on for this projection.
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> From<Linear<B>> for LoraLinear<B> {
    fn from(base: Linear<B>) -> Self {
        Self { base, lora: None }
    }
}

impl<B: Backend> LoraLinear<B> {
    /// `base(x)`, plus the adapter's update when there is one.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match &self.lora {
            Some(adapter) => adapter.forward(x.clone()) + self.base_forward(x),
            None => self.base_forward(x),
        }
    }

    /// `base(x)`, the weights upcast to the input's dtype when they are held in a lower one
    /// (a bf16 base under f32 activations: the product runs in f32).
    fn base_forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        if self.base.weight.val().dtype() == dtype {
            return projection::forward(&self.base, x);
        }
        let bias = self.base.bias.as_ref().map(|b| b.val().cast(dtype));
        projection::linear(x, self.base.weight.val().cast(dtype), bias)
    }

    /// `[d_in, d_out]` of the base projection.
    pub fn dims(&self) -> [usize; 2] {
        self.base.weight.dims()
    }

    /// This projection with a fresh adapter (any previous one replaced).
    pub fn with_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        let [d_in, d_out] = self.dims();
        Self {
            base: self.base,
            lora: Some(LoraAdapter::new(d_in, d_out, config, device)),
        }
    }

    /// The base weights with the adapter's update added in (`W + scaling · A·B`), and no
    /// adapter: what a merged checkpoint holds.
    pub fn merge(self) -> Self {
        let Some(adapter) = self.lora else {
            return self;
        };
        let require_grad = self.base.weight.is_require_grad();
        let base = self.base.weight.val();
        let dtype = base.dtype();
        // Added in the adapter's precision, stored in the base's.
        let delta = adapter.delta_weight();
        let merged = (base.cast(delta.dtype()) + delta).cast(dtype).detach();
        let (id, _, mapper) = self.base.weight.consume();
        let weight = Param::from_mapped_value(id, merged.set_require_grad(require_grad), mapper);
        Self {
            base: Linear {
                weight,
                bias: self.base.bias,
            },
            lora: None,
        }
    }

    /// The base projection alone (the adapter switched off). Shares the base's tensors: no
    /// copy of the weights.
    pub fn without_lora(self) -> Self {
        Self {
            base: self.base,
            lora: None,
        }
    }
}

/// `module` with its frozen matrices (the base projections, embeddings and head of a LoRA
/// model: every 2-D parameter that takes no gradient) held in `dtype`, e.g. bf16 to halve the
/// base's memory. Norms and everything trained stay as they are; the products run in the
/// activations' dtype ([`LoraLinear::forward`] upcasts). Trained and frozen are told apart by
/// their gradients, so call it on the autodiff model (on a plain backend every matrix counts
/// as frozen).
pub fn cast_frozen_matrices<B: Backend, M: Module<B>>(module: M, dtype: DType) -> M {
    struct CastFrozen(DType);
    impl<B: Backend> ModuleMapper<B> for CastFrozen {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let frozen = !param.val().is_require_grad();
            match D == 2 && frozen {
                true => {
                    let dtype = self.0;
                    param.map(|t| t.cast(dtype))
                }
                false => param,
            }
        }
    }
    module.map(&mut CastFrozen(dtype))
}
