//! proptest strategies for otpref's inputs. Each shrinks towards a smaller, easier case (fewer
//! and smaller problems, a larger ε, masses nearer uniform), so that a failure is reported on
//! the simplest input that still shows it.

use std::ops::RangeInclusive;

use proptest::prelude::*;

use super::problems::{AplotCase, DpoCase, OtProblem, OtpoCase};

/// How the masses of generated problems look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masses {
    /// Positive, each side summing to 1 (ready for balanced OT).
    Normalised,
    /// Positive, each side with its own total in [0.5, 2] (for unbalanced OT).
    Unnormalised,
    /// Normalised, with some entries near zero (down to about 5e-7 of the largest): the entries
    /// whose logarithms stress a log-domain solver, but still real mass, not padding.
    NearZero,
}

/// What [`ot_batches`] generates.
#[derive(Debug, Clone, PartialEq)]
pub struct OtBatchSpec {
    /// Problems per batch.
    pub batch: RangeInclusive<usize>,
    /// Rows per problem (a batch of several sizes is padded to its largest).
    pub rows: RangeInclusive<usize>,
    /// Columns per problem.
    pub cols: RangeInclusive<usize>,
    /// Costs are uniform in `[0, cost_spread)`: with ε, `cost_spread / ε` is how hard the
    /// problem is for a log-domain solver.
    pub cost_spread: f64,
    /// The masses' shape.
    pub masses: Masses,
}

impl Default for OtBatchSpec {
    /// 1-3 problems of 1-6 rows and columns, costs in [0, 1), normalised masses.
    fn default() -> Self {
        Self {
            batch: 1..=3,
            rows: 1..=6,
            cols: 1..=6,
            cost_spread: 1.0,
            masses: Masses::Normalised,
        }
    }
}

/// One `n × m` problem with costs in `[0, cost_spread)` and masses of the given shape.
pub fn ot_problem(
    n: usize,
    m: usize,
    cost_spread: f64,
    masses: Masses,
) -> impl Strategy<Value = OtProblem> {
    (
        prop::collection::vec(0.0f64..1.0, n * m),
        mass_vector(n, masses),
        mass_vector(m, masses),
    )
        .prop_map(move |(cost, a, b)| OtProblem {
            n,
            m,
            cost: cost.iter().map(|c| c * cost_spread).collect(),
            a,
            b,
        })
}

/// Batches of problems of mixed sizes, as [`pad_problems`](super::pad_problems) pads them.
/// Shrinks to fewer problems, then to smaller ones.
pub fn ot_batches(spec: OtBatchSpec) -> impl Strategy<Value = Vec<OtProblem>> {
    let OtBatchSpec {
        batch,
        rows,
        cols,
        cost_spread,
        masses,
    } = spec;
    let problem = (rows, cols).prop_flat_map(move |(n, m)| ot_problem(n, m, cost_spread, masses));
    prop::collection::vec(problem, batch)
}

/// ε in `range`, log-uniform (each decade as likely), shrinking towards the largest (the
/// easiest for a solver).
pub fn epsilons(range: RangeInclusive<f64>) -> impl Strategy<Value = f64> {
    let (low, high) = (*range.start(), *range.end());
    assert!(
        low > 0.0 && low <= high,
        "epsilons: the range must be positive, got {low}..={high}"
    );
    (0.0f64..=1.0).prop_map(move |u| high * (low / high).powf(u))
}

/// A mass vector of `len` positive entries.
fn mass_vector(len: usize, masses: Masses) -> impl Strategy<Value = Vec<f64>> {
    let entries = prop::collection::vec(0.05f64..1.0, len);
    let tiny = prop::collection::vec(any::<bool>(), len);
    let total = 0.5f64..2.0;
    (entries, tiny, total).prop_map(move |(mut values, tiny, total)| {
        if masses == Masses::NearZero {
            // Shrinking turns `tiny` off: the near-zero entries go first.
            for (v, t) in values.iter_mut().zip(tiny) {
                if t {
                    *v *= 1e-5;
                }
            }
        }
        let sum: f64 = values.iter().sum();
        let scale = if masses == Masses::Unnormalised {
            total
        } else {
            1.0
        };
        values.iter().map(|v| v / sum * scale).collect()
    })
}

/// OTPO inputs: `batch` pairs of responses of 1 to `max_len` tokens with hidden states of
/// width `hidden`, entries in `[-scale, scale)`.
pub fn otpo_cases(
    batch: RangeInclusive<usize>,
    max_len: usize,
    hidden: usize,
    scale: f64,
) -> impl Strategy<Value = OtpoCase> {
    let response = move || {
        (1..=max_len.max(1)).prop_flat_map(move |len| {
            prop::collection::vec(-1.0f64..1.0, len * hidden)
                .prop_map(move |v| v.iter().map(|x| x * scale).collect::<Vec<f64>>())
        })
    };
    prop::collection::vec((response(), response()), batch).prop_map(move |pairs| {
        let (chosen, rejected) = pairs.into_iter().unzip();
        OtpoCase {
            hidden,
            chosen,
            rejected,
        }
    })
}

/// DPO inputs: `batch` pairs padded to `len` tokens, each response 1 to `len` tokens long,
/// log-probabilities in `[-10, 0)`, weights in `[0, 2)` (0 at padding). Padded positions hold
/// log-probabilities of -1e4: a loss that reads them is visibly wrong.
pub fn dpo_cases(batch: RangeInclusive<usize>, len: usize) -> impl Strategy<Value = DpoCase> {
    let len = len.max(1);
    let pair = (1..=len, 1..=len);
    prop::collection::vec(pair, batch).prop_flat_map(move |lengths| {
        let cells = lengths.len() * len;
        let logps = move || prop::collection::vec(-10.0f64..0.0, cells);
        let weights = move || prop::collection::vec(0.0f64..2.0, cells);
        (logps(), logps(), logps(), logps(), weights(), weights()).prop_map(
            move |(pc, pr, rc, rr, wc, wr)| {
                let mask = |values: Vec<f64>, side: usize, padding: f64| {
                    masked(values, &lengths, len, side, padding)
                };
                DpoCase {
                    lengths: lengths.clone(),
                    len,
                    policy_chosen: mask(pc, 0, -1e4),
                    policy_rejected: mask(pr, 1, -1e4),
                    reference_chosen: mask(rc, 0, -1e4),
                    reference_rejected: mask(rr, 1, -1e4),
                    weights_chosen: mask(wc, 0, 0.0),
                    weights_rejected: mask(wr, 1, 0.0),
                }
            },
        )
    })
}

/// `values` (`[batch × len]`) with the positions past each pair's `side` length set to
/// `padding`.
fn masked(
    mut values: Vec<f64>,
    lengths: &[(usize, usize)],
    len: usize,
    side: usize,
    padding: f64,
) -> Vec<f64> {
    for (k, (c, r)) in lengths.iter().enumerate() {
        let valid = if side == 0 { *c } else { *r };
        values[k * len + valid..(k + 1) * len].fill(padding);
    }
    values
}

/// APLOT batches: `batch` pairs with representations of width `dim` in `[-1, 1)` and rewards
/// in `[-reward_spread, reward_spread)`.
pub fn aplot_cases(
    batch: RangeInclusive<usize>,
    dim: usize,
    reward_spread: f64,
) -> impl Strategy<Value = AplotCase> {
    batch.prop_flat_map(move |n| {
        let repr = move || prop::collection::vec(-1.0f64..1.0, n * dim);
        let rewards = move || prop::collection::vec(-1.0f64..1.0, n);
        (repr(), repr(), rewards(), rewards()).prop_map(move |(cr, rr, cw, rw)| AplotCase {
            dim,
            chosen_repr: cr,
            rejected_repr: rr,
            chosen_rewards: cw.iter().map(|r| r * reward_spread).collect(),
            rejected_rewards: rw.iter().map(|r| r * reward_spread).collect(),
        })
    })
}
