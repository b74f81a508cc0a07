//! OTPO token weights: unbalanced OT between the tokens of the chosen and rejected responses.

use std::fmt;

use burn::config::Config;
use burn::serde::{Deserialize, Serialize};
use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::{TokenWeights, WeightBudget};
use crate::checks;
use crate::error::OtprefError;
use crate::sinkhorn::{
    fused_serves, log_sum_exp, solve_log_marginals, unbalanced_sinkhorn, Convergence, GradientMode,
    OtBackend, Transport, UnbalancedConfig, FAST_PATHS_DEFAULT, LOG_ZERO,
};

/// How the OTPO cost is scaled before the OT.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum CostNormalization {
    /// Divide by the largest distance between valid token pairs, when it exceeds 1 (the paper).
    ValidPairs,
    /// Divide by the largest distance between valid token pairs, always: costs in [0, 1]
    /// whatever the hidden states' scale, so ε1 means the same for every model.
    ValidPairsAlways,
    /// The released OTPO code: its padded matrix holds zero vectors at masked positions, so
    /// the max also covers the norms `‖h‖ + 1e-6` of the valid hidden states (divided only when
    /// above 1). Use this to reproduce the released numbers.
    Released,
    /// Use the distances as they are.
    None,
}

/// Configuration of [`otpo_token_weights`] (defaults: the paper and its released code).
///
/// A burn [`Config`] like the others (`new`, `with_*`, `save`, `load`), written out by hand so
/// that an infinite `marginal_penalty` survives a JSON round trip (it is saved as `"inf"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct OtpoConfig {
    /// ε1, the entropic regularisation (`ot_reg`: 1.0 for 8B models, 0.1 for 3B models;
    /// default 1.0).
    pub epsilon: f64,
    /// ε2, the KL penalty on both marginals (`ot_reg_m`; default 0.2). `f64::INFINITY` makes
    /// both marginals exact (then every pair's responses must have equal lengths).
    #[serde(with = "crate::penalty_serde")]
    pub marginal_penalty: f64,
    /// Total weight τ per response (default `Min`).
    pub budget: WeightBudget,
    /// Cost scaling (default `ValidPairs`).
    pub normalization: CostNormalization,
    /// `Detach` (the paper: weights are constants; the default), or `Unrolled`/`Implicit` for
    /// gradients to the hidden states (the normalisation constant `max M` is treated as a
    /// constant).
    pub gradient: GradientMode,
    /// Sinkhorn iteration limit per pair (POT's default 1000). Whether it was enough is in
    /// [`TokenWeights::convergence`].
    pub max_iters: usize,
    /// A pair's solve stops once no log-potential (`f/ε1`, `g/ε1`) moves more than this in one
    /// iteration (default 1e-6). POT's `sinkhorn_unbalanced` bounds a different quantity, the
    /// relative change of its scalings `u = exp(f/ε1)` and `v`, with the same default; ours is
    /// the stricter one where the scalings are small.
    pub tolerance: f64,
    /// Solve on the backend's fast path: the fused CPU solver on host-memory backends, the
    /// one-pass kernels on CubeCL backends (see [`UnbalancedConfig::fast_paths`]; default
    /// `true`).
    #[serde(default = "crate::sinkhorn::fast_paths_default", alias = "fused_cpu")]
    pub fast_paths: bool,
}

impl Config for OtpoConfig {}

impl fmt::Display for OtpoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&burn::config::config_to_json(self))
    }
}

impl OtpoConfig {
    /// The paper's settings: ε1 = 1, ε2 = 0.2, τ = min length, valid-pair normalisation,
    /// detached weights, 1000 iterations, tolerance 1e-6.
    pub fn new() -> Self {
        Self {
            epsilon: 1.0,
            marginal_penalty: 0.2,
            budget: WeightBudget::Min,
            normalization: CostNormalization::ValidPairs,
            gradient: GradientMode::Detach,
            max_iters: 1000,
            tolerance: 1e-6,
            fast_paths: FAST_PATHS_DEFAULT,
        }
    }

    /// Sets [`epsilon`](Self::epsilon) (ε1).
    pub fn with_epsilon(mut self, epsilon: f64) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Sets [`marginal_penalty`](Self::marginal_penalty) (ε2).
    pub fn with_marginal_penalty(mut self, marginal_penalty: f64) -> Self {
        self.marginal_penalty = marginal_penalty;
        self
    }

    /// Sets [`budget`](Self::budget).
    pub fn with_budget(mut self, budget: WeightBudget) -> Self {
        self.budget = budget;
        self
    }

    /// Sets [`normalization`](Self::normalization).
    pub fn with_normalization(mut self, normalization: CostNormalization) -> Self {
        self.normalization = normalization;
        self
    }

    /// Sets [`gradient`](Self::gradient).
    pub fn with_gradient(mut self, gradient: GradientMode) -> Self {
        self.gradient = gradient;
        self
    }

    /// Sets [`max_iters`](Self::max_iters).
    pub fn with_max_iters(mut self, max_iters: usize) -> Self {
        self.max_iters = max_iters;
        self
    }

    /// Sets [`tolerance`](Self::tolerance).
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// Sets [`fast_paths`](Self::fast_paths).
    pub fn with_fast_paths(mut self, fast_paths: bool) -> Self {
        self.fast_paths = fast_paths;
        self
    }
}

impl Default for OtpoConfig {
    fn default() -> Self {
        Self::new()
    }
}

/// OTPO's token weights for a whole batch (paper Eq. 9–12), in one call.
///
/// ```text
/// M_ij = ‖h_c,i − h_r,j‖₂ + 1e-6            (divided by max M if max M > 1)
/// Γ = unbalanced OT(M, a = 1 on chosen tokens, b = 1 on rejected tokens; ε1, ρ = ε2)
/// ω_c = Γ1 · τ / ΣΓ,   ω_r = Γᵀ1 · τ / ΣΓ,   τ = min(|y_c|, |y_r|)
/// ```
///
/// `chosen_hidden` `[batch, len_c, hidden]`, `rejected_hidden` `[batch, len_r, hidden]`, masks
/// `[batch, len_c]` and `[batch, len_r]` (1 on response tokens). Returns weights of the mask
/// shapes, exactly 0 on masked positions; each response's weights sum to τ.
///
/// # Errors
/// Shape mismatches, masks that are not 0/1, an empty response, NaN/Inf hidden states, or an
/// invalid configuration.
///
/// # Example
/// ```
/// use burn::backend::Flex;
/// use burn::tensor::Tensor;
/// use otpref::{otpo_token_weights, OtpoConfig};
///
/// let device = Default::default();
/// let chosen = Tensor::<Flex, 3>::from_floats([[[0.0, 1.0], [1.0, 0.0], [5.0, 5.0]]], &device);
/// let rejected = Tensor::<Flex, 3>::from_floats([[[0.0, 1.0], [1.0, 0.1]]], &device);
/// let mask_c = Tensor::<Flex, 2>::ones([1, 3], &device);
/// let mask_r = Tensor::<Flex, 2>::ones([1, 2], &device);
/// let w = otpo_token_weights(chosen, rejected, mask_c, mask_r, &OtpoConfig::new())?;
/// let chosen_w = w.chosen.into_data().to_vec::<f32>().unwrap();
/// // The budget τ = min(3, 2) = 2 is shared; the far-away token 2 gets the least.
/// assert!((chosen_w.iter().sum::<f32>() - 2.0).abs() < 1e-5);
/// assert!(chosen_w[2] < chosen_w[0] && chosen_w[2] < chosen_w[1]);
/// # Ok::<(), otpref::OtprefError>(())
/// ```
pub fn otpo_token_weights<B: OtBackend>(
    chosen_hidden: Tensor<B, 3>,
    rejected_hidden: Tensor<B, 3>,
    chosen_mask: Tensor<B, 2>,
    rejected_mask: Tensor<B, 2>,
    config: &OtpoConfig,
) -> Result<TokenWeights<B>, OtprefError> {
    check_inputs(
        &chosen_hidden,
        &rejected_hidden,
        &chosen_mask,
        &rejected_mask,
        config,
    )?;
    // f16/bf16 states are compared and transported in f32; the weights come back in their dtype.
    let dtype = chosen_hidden.dtype();
    let masks = Masks::new(
        crate::precision::widened(chosen_mask),
        crate::precision::widened(rejected_mask),
        config,
    )?;
    let states = States::new(
        crate::precision::widened(chosen_hidden),
        crate::precision::widened(rejected_hidden),
        &masks,
        config,
    );
    let solver = UnbalancedConfig::new(
        config.epsilon,
        config.marginal_penalty,
        config.marginal_penalty,
    )
    .with_gradient(config.gradient)
    .with_max_iters(config.max_iters)
    .with_tolerance(config.tolerance)
    .with_fast_paths(config.fast_paths);
    let cost = states.cost(&masks, &solver, config)?;
    let (log_rows, log_cols, convergence) = log_marginals(cost, &masks, &solver, config)?;
    Ok(rescaled(log_rows, log_cols, &masks, config.budget, convergence).in_dtype(dtype))
}

/// Shapes and dtypes of the inputs, and the config's settings.
fn check_inputs<B: Backend>(
    chosen_hidden: &Tensor<B, 3>,
    rejected_hidden: &Tensor<B, 3>,
    chosen_mask: &Tensor<B, 2>,
    rejected_mask: &Tensor<B, 2>,
    config: &OtpoConfig,
) -> Result<(), OtprefError> {
    let [batch, len_c, hidden] = chosen_hidden.dims();
    let [_, len_r, _] = rejected_hidden.dims();
    checks::shape("rejected_hidden", rejected_hidden, [batch, len_r, hidden])?;
    checks::shape("chosen_mask", chosen_mask, [batch, len_c])?;
    checks::shape("rejected_mask", rejected_mask, [batch, len_r])?;
    checks::same_dtype(&[
        ("chosen_hidden", chosen_hidden.dtype()),
        ("rejected_hidden", rejected_hidden.dtype()),
        ("chosen_mask", chosen_mask.dtype()),
        ("rejected_mask", rejected_mask.dtype()),
    ])?;
    checks::solver_settings(
        "OtpoConfig",
        config.epsilon,
        config.max_iters,
        config.tolerance,
    )?;
    if config.marginal_penalty.is_nan() || config.marginal_penalty <= 0.0 {
        return Err(OtprefError::InvalidParameter(format!(
            "OtpoConfig::marginal_penalty (ε2) must be > 0 (f64::INFINITY for exact marginals), \
             got {}",
            config.marginal_penalty
        )));
    }
    Ok(())
}

/// The responses' masks and lengths.
struct Masks<B: Backend> {
    chosen: Tensor<B, 2>,
    rejected: Tensor<B, 2>,
    lens_c: Vec<usize>,
    lens_r: Vec<usize>,
}

impl<B: Backend> Masks<B> {
    /// Reads the lengths; exact marginals (an infinite ε2) need equally long responses.
    fn new(
        chosen: Tensor<B, 2>,
        rejected: Tensor<B, 2>,
        config: &OtpoConfig,
    ) -> Result<Self, OtprefError> {
        let lens_c = checks::lengths("chosen_mask", &chosen)?;
        let lens_r = checks::lengths("rejected_mask", &rejected)?;
        if config.marginal_penalty.is_infinite() {
            if let Some(k) = (0..lens_c.len()).find(|k| lens_c[*k] != lens_r[*k]) {
                return Err(OtprefError::UnequalTotals(format!(
                    "OtpoConfig::marginal_penalty is infinite (exact marginals), which needs \
                     equally long responses, but pair {k} has {} chosen and {} rejected tokens \
                     (chosen_mask, rejected_mask); use a finite marginal_penalty such as 0.2",
                    lens_c[k], lens_r[k]
                )));
            }
        }
        Ok(Self {
            chosen,
            rejected,
            lens_c,
            lens_r,
        })
    }

    /// Whether any chosen (rejected) response is shorter than the padded length.
    fn padded(&self) -> (bool, bool) {
        let [_, len_c] = self.chosen.dims();
        let [_, len_r] = self.rejected.dims();
        (
            self.lens_c.iter().any(|l| *l < len_c),
            self.lens_r.iter().any(|l| *l < len_r),
        )
    }
}

/// The responses' hidden states, detached unless the weights are differentiated, with padded
/// positions zeroed.
struct States<B: OtBackend> {
    chosen: Tensor<B, 3>,
    rejected: Tensor<B, 3>,
}

impl<B: OtBackend> States<B> {
    fn new(
        chosen: Tensor<B, 3>,
        rejected: Tensor<B, 3>,
        masks: &Masks<B>,
        config: &OtpoConfig,
    ) -> Self {
        let (chosen, rejected) = match config.gradient {
            GradientMode::Detach => (chosen.detach(), rejected.detach()),
            _ => (chosen, rejected),
        };
        // Padded positions may hold anything (NaN included): zero them before any arithmetic,
        // so that they reach no distance, no normalisation max and no gradient.
        let (padded_c, padded_r) = masks.padded();
        Self {
            chosen: match padded_c {
                true => zero_padding(chosen, &masks.chosen),
                false => chosen,
            },
            rejected: match padded_r {
                true => zero_padding(rejected, &masks.rejected),
                false => rejected,
            },
        }
    }

    /// The normalised token cost `[batch, len_c, len_r]`. Without a graph, in f32, where the
    /// fused CPU solver serves, only the products go through the backend; the rest is one
    /// pass per pair on the host.
    fn cost(
        self,
        masks: &Masks<B>,
        solver: &UnbalancedConfig,
        config: &OtpoConfig,
    ) -> Result<Tensor<B, 3>, OtprefError> {
        let norms_c = squared_norms(self.chosen.clone());
        let norms_r = squared_norms(self.rejected.clone());
        // Checked on every path; only the host path reads the values.
        let norms_host = (
            check_norms("chosen_hidden", &norms_c)?,
            check_norms("rejected_hidden", &norms_r)?,
        );
        let dtype = self.chosen.dtype();
        let on_host = fused_serves::<B>(solver, dtype)
            && config.gradient == GradientMode::Detach
            && dtype == burn::tensor::DType::F32;
        #[cfg(feature = "fused-cpu")]
        if on_host {
            let products = self.chosen.matmul(self.rejected.swap_dims(1, 2));
            let (mask_c, mask_r) = (
                crate::host::to_host(masks.chosen.clone()),
                crate::host::to_host(masks.rejected.clone()),
            );
            let sides = super::otpo_host_cost::Sides {
                norms_c: &norms_host.0,
                norms_r: &norms_host.1,
                mask_c: &mask_c,
                mask_r: &mask_r,
            };
            return Ok(super::otpo_host_cost::token_cost(
                products,
                &sides,
                config.normalization,
            ));
        }
        #[cfg(not(feature = "fused-cpu"))]
        let _ = (on_host, norms_host);
        let (padded_c, padded_r) = masks.padded();
        Ok(token_cost(
            (self.chosen, norms_c),
            (self.rejected, norms_r),
            &masks.chosen,
            &masks.rejected,
            padded_c || padded_r,
            config.normalization,
        ))
    }
}

/// The logarithms of the plan's marginals `(log Γ1, log Γᵀ1)` and how the solves ended.
fn log_marginals<B: OtBackend>(
    cost: Tensor<B, 3>,
    masks: &Masks<B>,
    solver: &UnbalancedConfig,
    config: &OtpoConfig,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>, Convergence), OtprefError> {
    let (mask_c, mask_r) = (masks.chosen.clone(), masks.rejected.clone());
    if config.gradient == GradientMode::Detach {
        // Only the marginals are needed: skip forming the plan when there is no graph.
        // Normalised distances lie in [0, 1] (padding becomes 0): no need to search.
        let range = (config.normalization != CostNormalization::None).then_some((0.0, 1.0));
        return solve_log_marginals(cost, mask_c, mask_r, solver, range);
    }
    let transport = unbalanced_sinkhorn(cost.clone(), mask_c.clone(), mask_r.clone(), solver)?;
    let log_plan = log_plan(&transport, cost, config.epsilon, &mask_c, &mask_r);
    Ok((
        log_sum_exp(log_plan.clone(), 2).squeeze_dim(2),
        log_sum_exp(log_plan, 1).squeeze_dim(1),
        Convergence::from(&transport),
    ))
}

/// The weights from the plan's log-marginals: rescaled to the budget τ (or the raw marginals
/// without one), 0 on padding.
fn rescaled<B: Backend>(
    log_rows: Tensor<B, 2>,
    log_cols: Tensor<B, 2>,
    masks: &Masks<B>,
    budget: WeightBudget,
    convergence: Convergence,
) -> TokenWeights<B> {
    let pad_c = masks.chosen.clone().lower_elem(0.5);
    let pad_r = masks.rejected.clone().lower_elem(0.5);
    let convergence = Some(convergence);
    let Some(totals) = budgets(budget, &masks.lens_c, &masks.lens_r) else {
        return TokenWeights {
            chosen: log_rows.exp().mask_fill(pad_c, 0.0),
            rejected: log_cols.exp().mask_fill(pad_r, 0.0),
            convergence,
        };
    };
    // ω = τ Γ1 / ΣΓ as exp(log Γ1 - log ΣΓ): well defined even when the plan's mass
    // underflows the dtype (large distances, small ε1 or ε2).
    let log_rows = log_rows.mask_fill(pad_c.clone(), LOG_ZERO);
    let log_mass = log_sum_exp(log_rows.clone().unsqueeze_dim::<3>(1), 2).squeeze_dim::<2>(2);
    let (tau_c, tau_r) = budget_tensors::<B>(&totals, &log_rows);
    TokenWeights {
        chosen: ((log_rows - log_mass.clone()).exp() * tau_c).mask_fill(pad_c, 0.0),
        rejected: ((log_cols - log_mass).exp() * tau_r).mask_fill(pad_r, 0.0),
        convergence,
    }
}

/// `log Γ_ij = (f_i + g_j - C_ij)/ε` on valid pairs, [`LOG_ZERO`] elsewhere: the plan in the
/// log domain, where its marginals cannot underflow.
fn log_plan<B: Backend>(
    transport: &Transport<B>,
    cost: Tensor<B, 3>,
    epsilon: f64,
    chosen_mask: &Tensor<B, 2>,
    rejected_mask: &Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [_, n, m] = cost.dims();
    let invalid = chosen_mask
        .clone()
        .unsqueeze_dim::<3>(2)
        .matmul(rejected_mask.clone().unsqueeze_dim::<3>(1))
        .lower_elem(0.5);
    let potentials = transport.f.clone().unsqueeze_dim::<3>(2).repeat_dim(2, m)
        + transport.g.clone().unsqueeze_dim::<3>(1).repeat_dim(1, n);
    (potentials - cost)
        .div_scalar(epsilon)
        .mask_fill(invalid, LOG_ZERO)
}

/// Per-pair budgets `(τ_c, τ_r)`, `None` without rescaling.
pub(crate) fn budgets(
    budget: WeightBudget,
    lens_c: &[usize],
    lens_r: &[usize],
) -> Option<Vec<(f64, f64)>> {
    lens_c
        .iter()
        .zip(lens_r)
        .map(|(c, r)| budget.totals(*c, *r))
        .collect()
}

/// The budgets as `[batch, 1]` tensors on the device and dtype of `like`.
pub(crate) fn budget_tensors<B: Backend>(
    totals: &[(f64, f64)],
    like: &Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let make = |values: Vec<f64>| {
        let dtype = like.dtype();
        let len = values.len();
        Tensor::from_data(
            TensorData::new(values, [len, 1]).convert_dtype(dtype),
            (&like.device(), dtype),
        )
    };
    (
        make(totals.iter().map(|t| t.0).collect()),
        make(totals.iter().map(|t| t.1).collect()),
    )
}

/// Errors unless every response token's squared norm `norms` `[batch, len, 1]` is finite and
/// small enough (with a wide margin) that squared distances, at most twice the sum of two
/// squared norms, stay representable in the dtype. One host read of `batch · len` values: a
/// NaN or infinity in a hidden state makes its token's norm non-finite, and a later clamp
/// would hide it. Returns the norms read.
fn check_norms<B: Backend>(name: &str, norms: &Tensor<B, 3>) -> Result<Vec<f64>, OtprefError> {
    let [batch, len, _] = norms.dims();
    // Padded positions were zeroed, so their norms are 0: only response tokens can fail.
    let values = crate::host::to_host(norms.clone().detach().reshape([batch, len]));
    let limit = crate::precision::dtype_max(norms.dtype()) / 64.0;
    match values.iter().position(|v| !(v.is_finite() && *v <= limit)) {
        Some(bad) if !values[bad].is_finite() => Err(OtprefError::NonFinite(format!(
            "{name}[{}, {}] holds NaN or infinite values at a response token, or values whose \
             squared norm overflows {:?}; check the model's hidden states",
            bad / len,
            bad % len,
            norms.dtype()
        ))),
        Some(bad) => Err(OtprefError::NonFinite(format!(
            "{name}[{}, {}] has a squared norm of {:e}, too large for distances in {:?}; \
             pass the hidden states in a wider dtype or rescale them",
            bad / len,
            bad % len,
            values[bad],
            norms.dtype()
        ))),
        None => Ok(values),
    }
}

/// Euclidean token distances `‖h_c,i − h_r,j‖ + 1e-6` `[batch, len_c, len_r]`, normalised;
/// each side comes with its squared norms `[batch, len, 1]`.
fn token_cost<B: Backend>(
    (chosen, norms_c): (Tensor<B, 3>, Tensor<B, 3>),
    (rejected, norms_r): (Tensor<B, 3>, Tensor<B, 3>),
    chosen_mask: &Tensor<B, 2>,
    rejected_mask: &Tensor<B, 2>,
    padded: bool,
    normalization: CostNormalization,
) -> Tensor<B, 3> {
    let [batch, len_c, _] = chosen.dims();
    let [_, len_r, _] = rejected.dims();
    // ‖x − y‖² = [x, ‖x‖², 1] · [−2y, 1, ‖y‖²]: one matrix product, no broadcasts.
    let left = Tensor::cat(vec![chosen, norms_c.clone(), norms_c.ones_like()], 2);
    let right = Tensor::cat(
        vec![
            rejected.mul_scalar(-2.0),
            norms_r.ones_like(),
            norms_r.clone(),
        ],
        2,
    );
    let squared = left.matmul(right.swap_dims(1, 2));
    // The clamp keeps sqrt's gradient finite where two states coincide.
    let distance = squared.clamp_min(1e-12).sqrt().add_scalar(1e-6);
    let norms_r = norms_r.swap_dims(1, 2); // [batch, 1, len_r]

    let largest = |t: Tensor<B, 3>| -> Tensor<B, 2> {
        let [b, r, c] = t.dims();
        t.detach().reshape([b, r * c]).max_dim(1)
    };
    // Distances are >= 0, so zeroing the pairs with a padded side keeps them out of the max.
    let valid_distance = || match padded {
        true => {
            let valid = chosen_mask
                .clone()
                .unsqueeze_dim::<3>(2)
                .matmul(rejected_mask.clone().unsqueeze_dim::<3>(1));
            distance.clone() * valid
        }
        false => distance.clone(),
    };
    let scale = match normalization {
        CostNormalization::None => return distance,
        CostNormalization::ValidPairs => largest(valid_distance()).clamp_min(1.0),
        // Every distance is at least 1e-6, so the max is never 0.
        CostNormalization::ValidPairsAlways => largest(valid_distance()),
        CostNormalization::Released => {
            let pairs = largest(valid_distance());
            // Padded states were zeroed, as the released code's padded matrix holds them.
            let norm_c = largest(norms_c.detach().sqrt().add_scalar(1e-6));
            let norm_r = largest(norms_r.detach().sqrt().add_scalar(1e-6));
            pairs.max_pair(norm_c).max_pair(norm_r).clamp_min(1.0)
        }
    };
    // Per-problem scaling as a batched [1 x 1] x [1 x n·m] product: one pass, no broadcast.
    let inverse = scale.recip().unsqueeze_dim::<3>(2);
    inverse
        .matmul(distance.reshape([batch, 1, len_c * len_r]))
        .reshape([batch, len_c, len_r])
}

/// `hidden` `[batch, len, size]` with the positions where `mask` is 0 set to 0.
fn zero_padding<B: Backend>(hidden: Tensor<B, 3>, mask: &Tensor<B, 2>) -> Tensor<B, 3> {
    let [_, _, size] = hidden.dims();
    let padded = mask
        .clone()
        .lower_elem(0.5)
        .unsqueeze_dim::<3>(2)
        .repeat_dim(2, size);
    hidden.mask_fill(padded, 0.0)
}

/// `‖h_t‖²` per token, `[batch, len, 1]`, as a matrix-vector product (faster than a
/// reduction along the hidden dimension on CPU backends).
fn squared_norms<B: Backend>(hidden: Tensor<B, 3>) -> Tensor<B, 3> {
    let [batch, _, size] = hidden.dims();
    let ones = Tensor::<B, 3>::ones([batch, size, 1], (&hidden.device(), hidden.dtype()));
    hidden.square().matmul(ones)
}
