//! Invariant checks of OT plans, token weights and gradients. Each returns a [`Violation`]
//! naming the invariant, the problem and entry, and the size of the violation against its
//! tolerance, so it reads the same from proptest (`prop_assert!(check.is_ok(), ...)` or `?`
//! through [`TestCaseError`](proptest::test_runner::TestCaseError)'s `From<String>`), a plain
//! test or a debug assertion in a training loop.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::problems::host_values;
use crate::sinkhorn::Transport;
use crate::weights::{TokenWeights, WeightBudget};

/// An invariant that does not hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The invariant, e.g. "balanced row marginals".
    pub invariant: &'static str,
    /// Where: e.g. "problem 1, row 3".
    pub location: String,
    /// What was found, e.g. "row sum 0.2512 where a = 0.25".
    pub found: String,
    /// How far it is from holding (same unit as `tolerance`).
    pub size: f64,
    /// The tolerance it exceeds.
    pub tolerance: f64,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} violated at {}: {} (off by {:.3e}, tolerance {:.1e})",
            self.invariant, self.location, self.found, self.size, self.tolerance
        )
    }
}

impl std::error::Error for Violation {}

impl From<Violation> for String {
    fn from(v: Violation) -> Self {
        v.to_string()
    }
}

/// A batch's plan `[batch, n, m]` and masses on the host.
struct HostPlan {
    plan: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
    batch: usize,
    n: usize,
    m: usize,
}

impl HostPlan {
    fn read<B: Backend>(plan: Tensor<B, 3>, a: Tensor<B, 2>, b: Tensor<B, 2>) -> Self {
        let [batch, n, m] = plan.dims();
        Self {
            plan: host_values(plan),
            a: host_values(a),
            b: host_values(b),
            batch,
            n,
            m,
        }
    }

    fn at(&self, k: usize, i: usize, j: usize) -> f64 {
        self.plan[(k * self.n + i) * self.m + j]
    }

    fn row_sum(&self, k: usize, i: usize) -> f64 {
        (0..self.m).map(|j| self.at(k, i, j)).sum()
    }

    fn col_sum(&self, k: usize, j: usize) -> f64 {
        (0..self.n).map(|i| self.at(k, i, j)).sum()
    }
}

/// A balanced plan's marginals: for each problem, `‖P1 − a‖₁ ≤ tolerance` and
/// `‖Pᵀ1 − b‖₁ ≤ tolerance` (the solver's own stopping rule measures the same norm). The
/// violation names the row or column that is furthest off.
pub fn check_balanced_marginals<B: Backend>(
    plan: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    tolerance: f64,
) -> Result<(), Violation> {
    let host = HostPlan::read(plan, a, b);
    for k in 0..host.batch {
        let rows: Vec<(f64, f64)> = (0..host.n)
            .map(|i| (host.row_sum(k, i), host.a[k * host.n + i]))
            .collect();
        let cols: Vec<(f64, f64)> = (0..host.m)
            .map(|j| (host.col_sum(k, j), host.b[k * host.m + j]))
            .collect();
        for (side, mass, sums) in [("row", "a", rows), ("column", "b", cols)] {
            let error: f64 = sums.iter().map(|(s, t)| (s - t).abs()).sum();
            if error > tolerance || error.is_nan() {
                let (worst, (sum, target)) = furthest(&sums);
                return Err(Violation {
                    invariant: "balanced marginals",
                    location: format!("problem {k}, {side} {worst}"),
                    found: format!(
                        "{side} sum {sum:.6} where {mass} = {target:.6}; ‖error‖₁ over the \
                         problem's {side}s"
                    ),
                    size: error,
                    tolerance,
                });
            }
        }
    }
    Ok(())
}

/// An unbalanced plan's KL-relaxed marginals. The optimum of
/// `⟨P,C⟩ + ε KL(P|ab) + ρ_a KL(P1|a) + ρ_b KL(Pᵀ1|b)` has `P1 = a ⊙ exp(−f/ρ_a)` and
/// `Pᵀ1 = b ⊙ exp(−g/ρ_b)` with the potentials `f`, `g` the solver returns; each entry must
/// hold to `tolerance · max(target, 0.01 · Σa)` for rows and `tolerance · max(target,
/// 0.01 · Σb)` for columns (relative, with a floor at a hundredth of that side's mass).
/// Padded entries (zero mass) are skipped.
pub fn check_unbalanced_marginals<B: Backend>(
    transport: &Transport<B>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    rho_a: f64,
    rho_b: f64,
    tolerance: f64,
) -> Result<(), Violation> {
    let host = HostPlan::read(transport.plan.clone(), a, b);
    let f = host_values(transport.f.clone());
    let g = host_values(transport.g.clone());
    for k in 0..host.batch {
        let floor_a = 0.01 * host.a[k * host.n..(k + 1) * host.n].iter().sum::<f64>();
        let floor_b = 0.01 * host.b[k * host.m..(k + 1) * host.m].iter().sum::<f64>();
        let rows = (0..host.n).map(|i| {
            let target = host.a[k * host.n + i] * (-f[k * host.n + i] / rho_a).exp();
            (i, host.row_sum(k, i), target, host.a[k * host.n + i])
        });
        let cols = (0..host.m).map(|j| {
            let target = host.b[k * host.m + j] * (-g[k * host.m + j] / rho_b).exp();
            (j, host.col_sum(k, j), target, host.b[k * host.m + j])
        });
        let rows: Vec<_> = rows.collect();
        let cols: Vec<_> = cols.collect();
        for (side, formula, floor, entries) in [
            ("row", "a·exp(−f/ρ_a)", floor_a, rows),
            ("column", "b·exp(−g/ρ_b)", floor_b, cols),
        ] {
            for (index, sum, target, mass) in entries {
                if mass <= 0.0 {
                    continue;
                }
                let allowed = tolerance * target.max(floor);
                let error = (sum - target).abs();
                if error > allowed || error.is_nan() {
                    return Err(Violation {
                        invariant: "unbalanced (KL-relaxed) marginals",
                        location: format!("problem {k}, {side} {index}"),
                        found: format!("{side} sum {sum:.6} where {formula} = {target:.6}"),
                        size: error / target.max(floor),
                        tolerance,
                    });
                }
            }
        }
    }
    Ok(())
}

/// A plan's support: every entry finite and non-negative, and exactly 0 on padded rows and
/// columns (zero mass in `a` or `b`).
pub fn check_plan_support<B: Backend>(
    plan: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
) -> Result<(), Violation> {
    let host = HostPlan::read(plan, a, b);
    for k in 0..host.batch {
        for i in 0..host.n {
            for j in 0..host.m {
                let value = host.at(k, i, j);
                let padded = host.a[k * host.n + i] <= 0.0 || host.b[k * host.m + j] <= 0.0;
                let location = format!("problem {k}, entry ({i}, {j})");
                if !value.is_finite() || value < 0.0 {
                    return Err(Violation {
                        invariant: "a plan is finite and non-negative",
                        location,
                        found: format!("P = {value}"),
                        size: if value.is_finite() {
                            -value
                        } else {
                            f64::INFINITY
                        },
                        tolerance: 0.0,
                    });
                }
                if padded && value != 0.0 {
                    return Err(Violation {
                        invariant: "a plan is zero on padding",
                        location,
                        found: format!("P = {value:e} on a padded row or column"),
                        size: value,
                        tolerance: 0.0,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Token weights' budget: non-negative, 0 on masked positions (mask 0), and each response's
/// weights summing to its τ under `budget` (from the masks' lengths) within `tolerance`
/// relative to τ. `WeightBudget::None` checks only signs and masking.
pub fn check_weight_budget<B: Backend>(
    weights: &TokenWeights<B>,
    chosen_mask: Tensor<B, 2>,
    rejected_mask: Tensor<B, 2>,
    budget: WeightBudget,
    tolerance: f64,
) -> Result<(), Violation> {
    let [batch, len_c] = chosen_mask.dims();
    let [_, len_r] = rejected_mask.dims();
    let sides = [
        (
            "chosen",
            host_values(weights.chosen.clone()),
            host_values(chosen_mask),
            len_c,
        ),
        (
            "rejected",
            host_values(weights.rejected.clone()),
            host_values(rejected_mask),
            len_r,
        ),
    ];
    for k in 0..batch {
        let length = |mask: &[f64], len: usize| {
            mask[k * len..(k + 1) * len]
                .iter()
                .filter(|m| **m > 0.0)
                .count()
        };
        let lens = (length(&sides[0].2, len_c), length(&sides[1].2, len_r));
        let totals = budget_totals(budget, lens.0, lens.1);
        for (index, (side, w, mask, len)) in sides.iter().enumerate() {
            let row = &w[k * len..(k + 1) * len];
            for (t, (weight, m)) in row.iter().zip(&mask[k * len..(k + 1) * len]).enumerate() {
                if !(weight.is_finite() && *weight >= 0.0) || (*m <= 0.0 && *weight != 0.0) {
                    return Err(Violation {
                        invariant: "token weights are finite, non-negative and 0 where masked",
                        location: format!("pair {k}, {side} token {t} (mask {m})"),
                        found: format!("weight {weight}"),
                        size: weight.abs(),
                        tolerance: 0.0,
                    });
                }
            }
            let Some((tau_c, tau_r)) = totals else {
                continue;
            };
            let tau = if index == 0 { tau_c } else { tau_r };
            let total: f64 = row.iter().sum();
            let size = (total - tau).abs() / tau.max(f64::MIN_POSITIVE);
            if size > tolerance || size.is_nan() {
                return Err(Violation {
                    invariant: "token weights sum to the budget τ",
                    location: format!(
                        "pair {k}, {side} response ({} tokens)",
                        if index == 0 { lens.0 } else { lens.1 }
                    ),
                    found: format!("weights sum to {total:.6} where τ = {tau}"),
                    size,
                    tolerance,
                });
            }
        }
    }
    Ok(())
}

/// `(τ_c, τ_r)` of a pair, restated from the budgets' definitions (not taken from the code
/// that computes the weights, so that the check is independent of what it checks).
fn budget_totals(budget: WeightBudget, len_c: usize, len_r: usize) -> Option<(f64, f64)> {
    let (c, r) = (len_c as f64, len_r as f64);
    match budget {
        WeightBudget::Min => Some((c.min(r), c.min(r))),
        WeightBudget::Mean => Some(((c + r) / 2.0, (c + r) / 2.0)),
        WeightBudget::Max => Some((c.max(r), c.max(r))),
        WeightBudget::OwnLength => Some((c, r)),
        WeightBudget::None => None,
    }
}

/// Every entry of `values` is finite (a tensor of values or a gradient); `name` heads the
/// violation.
pub fn check_finite<B: Backend, const D: usize>(
    name: &str,
    values: Tensor<B, D>,
) -> Result<(), Violation> {
    let dims = values.dims();
    let host = host_values(values);
    match host.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(flat) => Err(Violation {
            invariant: "finite values",
            location: format!("{name}[{}]", unravel(flat, &dims)),
            found: format!("{}", host[flat]),
            size: f64::INFINITY,
            tolerance: 0.0,
        }),
    }
}

/// The entry with the largest `|sum − target|`, and its index.
fn furthest(sums: &[(f64, f64)]) -> (usize, (f64, f64)) {
    let error = |(s, t): &(f64, f64)| {
        let e = (s - t).abs();
        if e.is_nan() {
            f64::INFINITY
        } else {
            e
        }
    };
    sums.iter()
        .copied()
        .enumerate()
        .max_by(|x, y| error(&x.1).total_cmp(&error(&y.1)))
        .unwrap_or((0, (0.0, 0.0)))
}

/// A flat row-major index as `i, j, …`.
pub(super) fn unravel(mut flat: usize, dims: &[usize]) -> String {
    let mut index = vec![0; dims.len()];
    for (slot, dim) in index.iter_mut().zip(dims).rev() {
        *slot = flat % dim.max(&1);
        flat /= dim.max(&1);
    }
    index
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
