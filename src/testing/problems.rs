//! Test inputs as plain host data (what the strategies generate and shrink), and their
//! padded tensors.

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};

use crate::losses::{DpoInputs, ReferenceLogps};
use crate::weights::{ResponseTokens, TokenWeights};

/// One OT problem, unpadded: an `n × m` cost in row-major order and the two masses.
#[derive(Debug, Clone, PartialEq)]
pub struct OtProblem {
    /// Rows (the length of `a`).
    pub n: usize,
    /// Columns (the length of `b`).
    pub m: usize,
    /// `C[i, j]` at `i * m + j`.
    pub cost: Vec<f64>,
    /// Row masses, all positive.
    pub a: Vec<f64>,
    /// Column masses, all positive.
    pub b: Vec<f64>,
}

/// Pads `problems` into one batch `[batch, n_max, m_max]` as otpref's solvers take it:
/// padded rows and columns get zero mass and a cost of `pad_cost` (which a correct solver
/// never reads: try NaN).
pub fn pad_problems<B: Backend>(
    problems: &[OtProblem],
    pad_cost: f64,
    dtype: DType,
    device: &B::Device,
) -> (Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2>) {
    let n = problems.iter().map(|p| p.n).max().unwrap_or(0);
    let m = problems.iter().map(|p| p.m).max().unwrap_or(0);
    let batch = problems.len();
    let mut cost = vec![pad_cost; batch * n * m];
    let mut a = vec![0.0; batch * n];
    let mut b = vec![0.0; batch * m];
    for (k, p) in problems.iter().enumerate() {
        for i in 0..p.n {
            a[k * n + i] = p.a[i];
            let row = (k * n + i) * m;
            cost[row..row + p.m].copy_from_slice(&p.cost[i * p.m..(i + 1) * p.m]);
        }
        b[k * m..k * m + p.m].copy_from_slice(&p.b);
    }
    (
        tensor(cost, [batch, n, m], dtype, device),
        tensor(a, [batch, n], dtype, device),
        tensor(b, [batch, m], dtype, device),
    )
}

/// A batch of preference pairs' response tokens, unpadded: per pair, each response's hidden
/// states (`len × hidden`, row-major); padded to the batch's longest response by
/// [`to_tokens`](Self::to_tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct OtpoCase {
    /// Width of the hidden states.
    pub hidden: usize,
    /// Per pair, the chosen response's hidden states (`len_c × hidden`).
    pub chosen: Vec<Vec<f64>>,
    /// Per pair, the rejected response's hidden states (`len_r × hidden`).
    pub rejected: Vec<Vec<f64>>,
}

impl OtpoCase {
    /// Per pair, the chosen and rejected responses' lengths in tokens.
    pub fn lengths(&self) -> Vec<(usize, usize)> {
        let h = self.hidden.max(1);
        self.chosen
            .iter()
            .zip(&self.rejected)
            .map(|(c, r)| (c.len() / h, r.len() / h))
            .collect()
    }

    /// The masks and hidden states as `otpo_token_weights` and `token_weights` take them:
    /// responses padded at the end, padded positions' states set to `pad_value`.
    pub fn to_tokens<B: Backend>(&self, pad_value: f64, device: &B::Device) -> ResponseTokens<B> {
        let (chosen_hidden, chosen_mask) =
            padded_states(&self.chosen, self.hidden, pad_value, device);
        let (rejected_hidden, rejected_mask) =
            padded_states(&self.rejected, self.hidden, pad_value, device);
        ResponseTokens {
            chosen_mask,
            rejected_mask,
            chosen_hidden: Some(chosen_hidden),
            rejected_hidden: Some(rejected_hidden),
            chosen_logps: None,
            rejected_logps: None,
            chosen_weights: None,
            rejected_weights: None,
        }
    }
}

/// Per-token inputs of a DPO loss for a batch of pairs, padded to `len` with masks.
#[derive(Debug, Clone, PartialEq)]
pub struct DpoCase {
    /// Per pair, the response lengths in tokens (each at least 1, at most `len`).
    pub lengths: Vec<(usize, usize)>,
    /// The padded length of both sides.
    pub len: usize,
    /// Policy log-probabilities of the chosen tokens `[batch × len]` (≤ 0).
    pub policy_chosen: Vec<f64>,
    /// Policy log-probabilities of the rejected tokens.
    pub policy_rejected: Vec<f64>,
    /// Reference log-probabilities of the chosen tokens.
    pub reference_chosen: Vec<f64>,
    /// Reference log-probabilities of the rejected tokens.
    pub reference_rejected: Vec<f64>,
    /// Token weights of the chosen tokens (≥ 0; 0 at padding).
    pub weights_chosen: Vec<f64>,
    /// Token weights of the rejected tokens.
    pub weights_rejected: Vec<f64>,
}

impl DpoCase {
    /// Pairs in the batch.
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }

    /// The inputs and weights as `weighted_dpo_loss` takes them (padded positions' values are
    /// kept: a correct loss ignores them through the weights).
    pub fn to_inputs<B: Backend>(&self, device: &B::Device) -> (DpoInputs<B>, TokenWeights<B>) {
        let shape = [self.batch(), self.len];
        let t = |values: &[f64]| tensor(values.to_vec(), shape, DType::F32, device);
        let inputs = DpoInputs {
            policy_chosen: t(&self.policy_chosen),
            policy_rejected: t(&self.policy_rejected),
            reference: Some(ReferenceLogps {
                chosen: t(&self.reference_chosen),
                rejected: t(&self.reference_rejected),
            }),
        };
        let weights = TokenWeights {
            chosen: t(&self.weights_chosen),
            rejected: t(&self.weights_rejected),
            convergence: None,
        };
        (inputs, weights)
    }
}

/// A reward-model batch for APLOT: each pair's chosen and rejected representations and
/// rewards.
#[derive(Debug, Clone, PartialEq)]
pub struct AplotCase {
    /// Width of the representations.
    pub dim: usize,
    /// Chosen representations `[batch × dim]`.
    pub chosen_repr: Vec<f64>,
    /// Rejected representations `[batch × dim]`.
    pub rejected_repr: Vec<f64>,
    /// Chosen rewards `[batch]`.
    pub chosen_rewards: Vec<f64>,
    /// Rejected rewards `[batch]`.
    pub rejected_rewards: Vec<f64>,
}

impl AplotCase {
    /// Pairs in the batch.
    pub fn batch(&self) -> usize {
        self.chosen_rewards.len()
    }

    /// The four tensors, in `aplot_margins`' order.
    #[allow(clippy::type_complexity)]
    pub fn to_tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>, Tensor<B, 1>) {
        let shape = [self.batch(), self.dim];
        (
            tensor(self.chosen_repr.clone(), shape, DType::F32, device),
            tensor(self.rejected_repr.clone(), shape, DType::F32, device),
            tensor(
                self.chosen_rewards.clone(),
                [self.batch()],
                DType::F32,
                device,
            ),
            tensor(
                self.rejected_rewards.clone(),
                [self.batch()],
                DType::F32,
                device,
            ),
        )
    }
}

/// Responses' states padded to the longest, `[batch, len, hidden]`, and their mask.
fn padded_states<B: Backend>(
    responses: &[Vec<f64>],
    hidden: usize,
    pad_value: f64,
    device: &B::Device,
) -> (Tensor<B, 3>, Tensor<B, 2>) {
    let h = hidden.max(1);
    let len = responses.iter().map(|r| r.len() / h).max().unwrap_or(0);
    let batch = responses.len();
    let mut states = vec![pad_value; batch * len * hidden];
    let mut mask = vec![0.0; batch * len];
    for (k, response) in responses.iter().enumerate() {
        let start = k * len * hidden;
        states[start..start + response.len()].copy_from_slice(response);
        mask[k * len..k * len + response.len() / h].fill(1.0);
    }
    (
        tensor(states, [batch, len, hidden], DType::F32, device),
        tensor(mask, [batch, len], DType::F32, device),
    )
}

/// A tensor of `dtype` from f64 values.
pub fn tensor<B: Backend, const D: usize>(
    values: Vec<f64>,
    shape: [usize; D],
    dtype: DType,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(
        TensorData::new(values, shape).convert_dtype(dtype),
        (device, dtype),
    )
}

/// A tensor's values as f64, in row-major order.
pub fn host_values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    crate::host::to_host(t)
}
