//! Input checks and the padded, log-domain form of a batch of problems.

use burn::tensor::{backend::Backend, Bool, DType, Tensor};

use crate::checks;
use crate::error::OtprefError;

/// Stand-in for `log 0` at padded positions: finite, so that no `-inf - (-inf)` can ever form,
/// yet so negative that `exp` of it is exactly 0 in f32 and f64.
pub(crate) const LOG_ZERO: f64 = -1e30;

/// Largest `|C/ε|` accepted in a padded batch. Potentials grow to a few times it, and padded
/// rows and columns are kept out of every log-sum-exp only while [`LOG_ZERO`] stays far below
/// them.
const MAX_COST_OVER_EPSILON: f64 = 1e27;

/// Whether every entry is finite, and `max |t|` when it is, in one device synchronisation (the
/// sum carries NaN and infinities; only a non-finite sum pays for the exact scan).
fn finite_and_largest<B: Backend>(tensor: &Tensor<B, 3>) -> (bool, f64) {
    let tensor = tensor.clone().detach();
    let both = crate::host::to_host(Tensor::cat(
        vec![tensor.clone().sum(), tensor.clone().abs().max()],
        0,
    ));
    let finite = both[0].is_finite() || crate::host::all_finite(&tensor);
    (finite, both[1])
}

/// A validated batch of problems in the form the iterations use.
#[derive(Debug, Clone)]
pub(crate) struct Problem<B: Backend> {
    /// `-C/ε` with padded pairs set to 0 (never read by the iterations: the masses exclude them).
    pub log_kernel: Tensor<B, 3>,
    /// `log a`, with [`LOG_ZERO`] at padded rows.
    pub log_a: Tensor<B, 2>,
    /// `log b`, with [`LOG_ZERO`] at padded columns.
    pub log_b: Tensor<B, 2>,
    /// `log a`, with 0 at padded rows (for terms outside a log-sum-exp).
    pub log_a_or_zero: Tensor<B, 2>,
    /// `log b`, with 0 at padded columns.
    pub log_b_or_zero: Tensor<B, 2>,
    /// Padded rows (`a == 0`).
    pub pad_a: Tensor<B, 2, Bool>,
    /// Padded columns (`b == 0`).
    pub pad_b: Tensor<B, 2, Bool>,
    /// 1 on valid pairs, 0 where the row or the column is padding; `None` without padding.
    pub valid_pair: Option<Tensor<B, 3>>,
}

/// Per-problem dimensions of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dims {
    pub batch: usize,
    pub n: usize,
    pub m: usize,
}

/// What the checks of shapes, masses and ε found, before the cost is read.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub dims: Dims,
    /// The masses on the host, `[batch * n]` and `[batch * m]`.
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    /// Whether any mass is 0 (a padded row or column) anywhere in the batch.
    pub has_padding: bool,
}

/// Checks shapes, dtypes, masses, totals and ε: everything but the cost's values, which each
/// solver checks as it reads the cost ([`build`] here, the fused CPU solver on the host).
pub(crate) fn check_inputs<B: Backend>(
    cost: &Tensor<B, 3>,
    a: &Tensor<B, 2>,
    b: &Tensor<B, 2>,
    epsilon: f64,
    balanced: bool,
) -> Result<Checked, OtprefError> {
    let dims = check_shapes(cost, a, b)?;
    let a_host = masses_to_host("a", a)?;
    let b_host = masses_to_host("b", b)?;
    check_totals(&a_host, &b_host, dims, balanced, a.dtype())?;
    // Potentials are f = ε (x + log a) with |x + log a| up to a few hundred (logs of masses down
    // to the smallest normal number): keep 1000 ε representable.
    if epsilon * 1e3 > crate::precision::dtype_max(cost.dtype()) {
        return Err(OtprefError::InvalidParameter(format!(
            "epsilon = {epsilon:e} is too large for a cost in {:?}: the potentials \
             (epsilon times logs of the masses, up to about 1000 epsilon) may overflow; costs scaled to [0, 1] usually \
             want epsilon between 1e-3 and 1",
            cost.dtype()
        )));
    }
    let has_padding = a_host.iter().chain(&b_host).any(|mass| *mass == 0.0);
    Ok(Checked {
        dims,
        a: a_host,
        b: b_host,
        has_padding,
    })
}

/// Builds the log-domain problem the composed solver iterates on, checking the cost.
///
/// Padded positions (zero mass) may hold anything in `cost`, NaN included: they are replaced
/// before any arithmetic, so they never reach a value or a gradient.
pub(crate) fn build<B: Backend>(
    cost: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    checked: &Checked,
    epsilon: f64,
) -> Result<Problem<B>, OtprefError> {
    let pad_a = a.clone().lower_equal_elem(0.0);
    let pad_b = b.clone().lower_equal_elem(0.0);
    let has_padding = checked.has_padding;
    let (cost, valid_pair) = if has_padding {
        // Masses are >= 0, so sign() is the 0/1 validity mask, and the outer product of the
        // two masks (a matrix product, the fastest broadcast) marks the valid pairs.
        let valid_pair = a
            .clone()
            .sign()
            .unsqueeze_dim::<3>(2)
            .matmul(b.clone().sign().unsqueeze_dim::<3>(1));
        let cost = cost.mask_fill(valid_pair.clone().lower_elem(0.5), 0.0);
        (cost, Some(valid_pair))
    } else {
        (cost, None)
    };
    // Checked on -C/ε rather than on C: one pass catches both a non-finite cost and an ε so
    // small that C/ε overflows the dtype (which would otherwise turn into NaN plans).
    let log_kernel = cost.clone().mul_scalar(-1.0 / epsilon);
    let (finite, largest) = match has_padding {
        true => finite_and_largest(&log_kernel),
        false => (crate::host::all_finite(&log_kernel), 0.0),
    };
    if !finite {
        return Err(cost_error(
            crate::host::all_finite(&cost),
            epsilon,
            cost.dtype(),
        ));
    }
    check_padded_range(has_padding, largest, epsilon)?;

    // log of masses with padding guarded *before* the log, so no 1/0 reaches a gradient.
    let log_a_or_zero = a.clone().mask_fill(pad_a.clone(), 1.0).log();
    let log_b_or_zero = b.clone().mask_fill(pad_b.clone(), 1.0).log();
    Ok(Problem {
        log_kernel,
        log_a: log_a_or_zero.clone().mask_fill(pad_a.clone(), LOG_ZERO),
        log_b: log_b_or_zero.clone().mask_fill(pad_b.clone(), LOG_ZERO),
        log_a_or_zero,
        log_b_or_zero,
        pad_a,
        pad_b,
        valid_pair,
    })
}

/// The error for a valid cost entry whose `-C/ε` is not finite: the cost itself is not
/// (`cost_finite` false), or ε is so small that `C/ε` overflows `dtype`.
pub(crate) fn cost_error(cost_finite: bool, epsilon: f64, dtype: DType) -> OtprefError {
    if !cost_finite {
        return OtprefError::NonFinite(
            "the cost holds NaN or infinite values at valid (non-padded) positions; remove \
             them where they come from (padded rows and columns, where the mass is 0, may \
             hold anything)"
                .into(),
        );
    }
    OtprefError::InvalidParameter(format!(
        "epsilon = {epsilon:e} is too small for this cost in {dtype:?}: cost / epsilon \
         overflows; raise epsilon or divide the cost by its largest entry"
    ))
}

/// Errors when a padded batch has `|C/ε|` up to `largest`, beyond
/// [`MAX_COST_OVER_EPSILON`]. Both solvers check it, so that a batch is accepted or refused
/// whichever solver runs it.
pub(crate) fn check_padded_range(
    has_padding: bool,
    largest: f64,
    epsilon: f64,
) -> Result<(), OtprefError> {
    if has_padding && largest > MAX_COST_OVER_EPSILON {
        return Err(OtprefError::InvalidParameter(format!(
            "cost / epsilon reaches {largest:e} in magnitude (epsilon = {epsilon:e}), beyond the \
             {MAX_COST_OVER_EPSILON:e} the log-domain solver supports in a padded batch (padding \
             would no longer be told apart); raise epsilon or divide the cost by its largest entry"
        )));
    }
    Ok(())
}

fn check_shapes<B: Backend>(
    cost: &Tensor<B, 3>,
    a: &Tensor<B, 2>,
    b: &Tensor<B, 2>,
) -> Result<Dims, OtprefError> {
    let [batch, n, m] = cost.dims();
    let dims = Dims { batch, n, m };
    checks::same_dtype(&[("cost", cost.dtype()), ("a", a.dtype()), ("b", b.dtype())])?;
    if batch == 0 || n == 0 || m == 0 {
        return Err(OtprefError::Shape(format!(
            "cost has shape [{batch}, {n}, {m}]; batch, n and m must all be at least 1"
        )));
    }
    if a.dims() != [batch, n] {
        return Err(OtprefError::Shape(format!(
            "cost is [batch, n, m] = [{batch}, {n}, {m}] so a must be [{batch}, {n}], but a is {:?}",
            a.dims()
        )));
    }
    if b.dims() != [batch, m] {
        return Err(OtprefError::Shape(format!(
            "cost is [batch, n, m] = [{batch}, {n}, {m}] so b must be [{batch}, {m}], but b is {:?}",
            b.dims()
        )));
    }
    Ok(dims)
}

fn masses_to_host<B: Backend>(name: &str, masses: &Tensor<B, 2>) -> Result<Vec<f64>, OtprefError> {
    let [_, len] = masses.dims();
    let values = crate::host::to_host(masses.clone());
    if let Some(pos) = values.iter().position(|v| !v.is_finite() || *v < 0.0) {
        return Err(OtprefError::InvalidMass(format!(
            "{name}[{}, {}] = {}; masses must be finite and >= 0 (use 0 to mark padding)",
            pos / len,
            pos % len,
            values[pos]
        )));
    }
    Ok(values)
}

fn check_totals(
    a: &[f64],
    b: &[f64],
    dims: Dims,
    balanced: bool,
    dtype: DType,
) -> Result<(), OtprefError> {
    // Masses normalised in f32 differ by ~1e-7 and 1e-4 marks a real mismatch; bf16 and f16
    // round each mass to 8 and 11 bits, so their totals get a tolerance of 4 machine epsilons.
    let tolerance: f64 = match dtype {
        DType::BF16 => 4.0 * 7.82e-3,
        DType::F16 => 4.0 * 9.77e-4,
        _ => 1e-4,
    };
    for problem in 0..dims.batch {
        let total_a: f64 = a[problem * dims.n..(problem + 1) * dims.n].iter().sum();
        let total_b: f64 = b[problem * dims.m..(problem + 1) * dims.m].iter().sum();
        for (name, total) in [("a", total_a), ("b", total_b)] {
            if total <= 0.0 {
                return Err(OtprefError::Empty(format!(
                    "problem {problem} has no positive mass in {name}; every problem needs at \
                     least one valid row and one valid column (drop empty problems from the batch)"
                )));
            }
        }
        if balanced && (total_a - total_b).abs() > tolerance * total_a.max(total_b) {
            return Err(OtprefError::UnequalTotals(format!(
                "problem {problem}: sum(a) = {total_a} but sum(b) = {total_b}; balanced \
                 transport (sinkhorn, or unbalanced_sinkhorn with both rho infinite) needs \
                 equal totals: normalise both, or relax a marginal with a finite rho in \
                 unbalanced_sinkhorn"
            )));
        }
    }
    Ok(())
}

/// The error for an unbalanced plan (or its potentials) that overflows `dtype`.
pub(crate) fn plan_overflow_error(dtype: DType) -> OtprefError {
    OtprefError::NonFinite(format!(
        "the unbalanced transport plan overflows {dtype:?}: with relaxed marginals its mass grows \
         exponentially as costs become negative; use costs >= 0 (e.g. subtract the smallest \
         entry) or compute in f64"
    ))
}

/// Largest spread `max K - min K` (in units of ε) for which the shifted kernel is exact: its
/// smallest possible dominant term `exp(-spread)` stays a normal number, with margin.
pub(crate) const fn max_spread(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 600.0,
        DType::F32 | DType::Flex32 | DType::BF16 => 60.0,
        DType::F16 => 8.0,
        _ => 0.0,
    }
}
