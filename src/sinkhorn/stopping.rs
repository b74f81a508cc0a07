//! The stopping rule every solver shares (the composed one in `solver.rs` and the fused CPU
//! one), so that both stop by the same checks and report the same way.

use super::transport::Convergence;

/// One problem's progress through its convergence checks (shared with the fused solver, so
/// that both stop by the same rule).
#[derive(Debug, Clone)]
pub(super) struct ProblemStats {
    /// Iterations run when it converged (`max_iters` until then).
    pub iterations: usize,
    pub converged: bool,
    /// Error at the last check.
    pub error: f64,
    /// Smallest error seen so far, and how many checks in a row have not beaten it.
    best_error: f64,
    stale_checks: usize,
}

impl ProblemStats {
    pub(super) fn new(max_iters: usize) -> Self {
        Self {
            iterations: max_iters,
            converged: false,
            error: f64::INFINITY,
            best_error: f64::INFINITY,
            stale_checks: 0,
        }
    }

    /// Records the check made after `iteration` iterations (`floor`: the error rounding alone
    /// produces); true when the problem has converged.
    pub(super) fn record(
        &mut self,
        error: f64,
        floor: f64,
        iteration: usize,
        tolerance: f64,
    ) -> bool {
        if self.converged {
            return true;
        }
        self.error = error;
        if error < self.best_error {
            self.best_error = error;
            self.stale_checks = 0;
        } else {
            self.stale_checks += 1;
        }
        // Below the rounding floor, an error that has stopped improving is as good as the
        // floating-point type allows (f32 with large C/ε): stop instead of spinning.
        let stalled = error <= floor && self.stale_checks >= STALE_CHECKS;
        // A NaN error never counts as converged (NaN <= tol is false).
        if error <= tolerance || stalled {
            self.converged = true;
            self.iterations = iteration;
        }
        self.converged
    }
}

/// The batch's report.
pub(super) fn convergence(stats: &[ProblemStats]) -> Convergence {
    Convergence {
        iterations: stats.iter().map(|s| s.iterations).collect(),
        converged: stats.iter().map(|s| s.converged).collect(),
        marginal_error: stats.iter().map(|s| s.error).collect(),
    }
}

/// Checks in a row without a new best error, below the rounding floor, after which a problem
/// counts as converged to working precision.
pub(super) const STALE_CHECKS: usize = 20;
