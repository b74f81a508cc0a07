//! The result of a solve.

use burn::tensor::{backend::Backend, Tensor};

/// Solution of a batch of entropic OT problems, as returned by [`sinkhorn`](crate::sinkhorn())
/// and [`unbalanced_sinkhorn`](crate::unbalanced_sinkhorn()).
///
/// Potentials follow POT's log-domain convention: `f = ε log u`, `g = ε log v`, so that
/// `plan[b, i, j] = exp((f[b, i] + g[b, j] - cost[b, i, j]) / ε)` on valid entries.
#[derive(Debug, Clone)]
pub struct Transport<B: Backend> {
    /// The transport plan `[batch, n, m]`; exactly 0 on padded rows and columns.
    pub plan: Tensor<B, 3>,
    /// Row potentials `[batch, n]` in cost units; 0 on padded rows.
    pub f: Tensor<B, 2>,
    /// Column potentials `[batch, m]` in cost units; 0 on padded columns.
    pub g: Tensor<B, 2>,
    /// Sinkhorn iterations each problem ran (each problem stops when it converges).
    pub iterations: Vec<usize>,
    /// Whether each problem met its tolerance within `max_iters`, or converged to working
    /// precision: its error sat below the rounding floor of its potentials (possible in f32
    /// when `C/ε` is large) without improving for 20 checks.
    pub converged: Vec<bool>,
    /// Each problem's error at its last convergence check: the L1 marginal error
    /// `||P1 - a||_1` for balanced problems (the column marginal is exact after the last
    /// update); for problems with a relaxed side, the largest change of a log-potential
    /// `max |Δf|/ε, |Δg|/ε` in the last iteration (the marginals of an unbalanced plan are not
    /// meant to equal `a` and `b`).
    pub marginal_error: Vec<f64>,
}

impl<B: Backend> Transport<B> {
    /// True when every problem of the batch converged.
    pub fn all_converged(&self) -> bool {
        self.converged.iter().all(|c| *c)
    }
}

/// How a batch of solves ended, for results that are not a [`Transport`] (such as
/// [`TokenWeights`](crate::TokenWeights) from OTPO): the same report, field by field.
#[derive(Debug, Clone, PartialEq)]
pub struct Convergence {
    /// Sinkhorn iterations each problem ran.
    pub iterations: Vec<usize>,
    /// Whether each problem met its tolerance within the iteration limit (see
    /// [`Transport::converged`]).
    pub converged: Vec<bool>,
    /// Each problem's error at its last convergence check (see
    /// [`Transport::marginal_error`]).
    pub marginal_error: Vec<f64>,
}

impl Convergence {
    /// True when every problem of the batch converged.
    pub fn all_converged(&self) -> bool {
        self.converged.iter().all(|c| *c)
    }
}

impl<B: Backend> From<&Transport<B>> for Convergence {
    fn from(transport: &Transport<B>) -> Self {
        Convergence {
            iterations: transport.iterations.clone(),
            converged: transport.converged.clone(),
            marginal_error: transport.marginal_error.clone(),
        }
    }
}
