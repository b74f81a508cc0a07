//! The reward model: a decoder with a scalar head read at the last real token
//! (`LlamaForSequenceClassification` with one label).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Bool, Int, Tensor};

use super::config::DecoderConfig;
use super::decoder::Decoder;
use super::lora::LoraConfig;

/// A decoder with a scalar reward head (`score.weight`, no bias).
#[derive(Module, Debug)]
pub struct RewardModel<B: Backend> {
    /// The decoder stack (`model.*` in the checkpoint).
    pub model: Decoder<B>,
    /// The reward head `hidden → 1`.
    pub score: Linear<B>,
}

/// What one forward pass of a [`RewardModel`] returns.
#[derive(Debug, Clone)]
pub struct RewardOutput<B: Backend> {
    /// One reward per sequence, `[batch]`.
    pub rewards: Tensor<B, 1>,
    /// The hidden state the reward is read from (the last real token's), `[batch, hidden]`:
    /// APLOT's pooled representation.
    pub pooled: Tensor<B, 2>,
    /// The last hidden state after the final norm, `[batch, len, hidden_size]`.
    pub hidden: Tensor<B, 3>,
}

impl<B: Backend> RewardModel<B> {
    /// A reward model with a fresh head (normal, std `initializer_range`).
    pub fn new(config: &DecoderConfig, device: &B::Device) -> Self {
        Self {
            model: Decoder::new(config, device),
            score: new_score_head(config, device),
        }
    }

    /// The model with fresh LoRA adapters on `config.targets` and the `score` head trained in
    /// full (PEFT's `modules_to_save` for sequence classification); the rest frozen.
    pub fn with_lora(self, config: &LoraConfig, device: &B::Device) -> Self {
        let score = self.score.no_grad();
        Self {
            model: self.model.with_lora(config, device),
            score: Linear {
                weight: score.weight.set_require_grad(true),
                bias: score.bias.map(|b| b.set_require_grad(true)),
            },
        }
    }

    /// Activation checkpointing on (see [`super::checkpointing`]): differentiate losses with
    /// [`RewardModel::backward`].
    pub fn with_gradient_checkpointing(self) -> Self {
        Self {
            model: self.model.with_gradient_checkpointing(),
            ..self
        }
    }

    /// The model with its frozen matrices held in `dtype` (see
    /// [`cast_frozen_matrices`](super::lora::cast_frozen_matrices)).
    pub fn with_frozen_dtype(self, dtype: burn::tensor::DType) -> Self {
        super::lora::cast_frozen_matrices(self, dtype)
    }

    /// The adapters merged into the base weights.
    pub fn merge_lora(self) -> Self {
        Self {
            model: self.model.merge_lora(),
            ..self
        }
    }

    /// Rewards for `input_ids` `[batch, len]`, read at each row's last real token.
    ///
    /// The last real token is found from `attention_mask` (true on real tokens), never by
    /// searching for the padding or EOS id: when padding is EOS (as for Llama 3), searching
    /// the ids scores the wrong token and leaves the model at chance accuracy.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Bool>,
    ) -> RewardOutput<B> {
        let [batch, len] = input_ids.dims();
        let hidden = self.model.forward(input_ids, attention_mask.clone());
        let width = hidden.dims()[2];
        let last = last_real_position(attention_mask)
            .reshape([batch, 1, 1])
            .expand([batch, 1, width]);
        let pooled = hidden.clone().gather(1, last).reshape([batch, width]);
        debug_assert!(len > 0);
        RewardOutput {
            rewards: self.score.forward(pooled.clone()).reshape([batch]),
            pooled,
            hidden,
        }
    }
}

impl<B: AutodiffBackend> RewardModel<B> {
    /// The parameters' gradients of `loss`, recomputing checkpointed layers where the forward
    /// passes that led to it ran with checkpointing.
    pub fn backward(&self, loss: Tensor<B, 1>) -> GradientsParams {
        super::checkpointing::backward(self, &self.model, None, loss)
    }
}

/// A fresh reward head, as `transformers` initialises one.
pub(crate) fn new_score_head<B: Backend>(config: &DecoderConfig, device: &B::Device) -> Linear<B> {
    LinearConfig::new(config.hidden_size, 1)
        .with_bias(false)
        .with_initializer(super::normal_init(config))
        .init(device)
}

/// The index of each row's last true entry, `[batch]` (0 for a row with none).
pub fn last_real_position<B: Backend>(attention_mask: Tensor<B, 2, Bool>) -> Tensor<B, 1, Int> {
    let [batch, len] = attention_mask.dims();
    let positions =
        Tensor::<B, 1, Int>::arange(0..len as i64, &attention_mask.device()).reshape([1, len]);
    (attention_mask.int() * positions)
        .argmax(1)
        .reshape([batch])
}
