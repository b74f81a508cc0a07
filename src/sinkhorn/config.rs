//! Configurations of the balanced and unbalanced solvers.

use std::fmt;

use burn::config::Config;
use burn::serde::{Deserialize, Serialize};

use crate::error::OtprefError;

/// How gradients flow through a Sinkhorn solve.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum GradientMode {
    /// No graph at all: the outputs are constants for autodiff. Cheapest; what OTPO and APLOT
    /// use for their weights and margins.
    Detach,
    /// Autodiff records every iteration. Exact derivative of the truncated algorithm; memory
    /// grows linearly with the number of iterations.
    Unrolled,
    /// Implicit differentiation of the fixed point (a custom backward that solves the adjoint
    /// linear system with conjugate gradients). Memory does not depend on the iteration count.
    /// Exact at convergence.
    Implicit,
}

/// Configuration of balanced entropic OT, see [`sinkhorn`](crate::sinkhorn()).
///
/// ```text
/// P* = argmin_{P >= 0, P1 = a, Pᵀ1 = b} <P, C> + ε Σ P (log P - 1)
/// ```
///
/// A burn [`Config`] (`new`, `with_*`, `save`, `load`), written out by hand so that a saved
/// config with a bad value is refused naming the field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct SinkhornConfig {
    /// Entropic regularisation ε (POT's `reg`, OTT-JAX's `epsilon`), in cost units. Must be > 0.
    #[serde(deserialize_with = "named::epsilon")]
    pub epsilon: f64,
    /// Iteration limit per problem (default 1000).
    #[serde(deserialize_with = "named::max_iters")]
    pub max_iters: usize,
    /// Stop a problem once its L1 marginal error `||P1 - a||_1` is below this (default 1e-6).
    #[serde(deserialize_with = "named::tolerance")]
    pub tolerance: f64,
    /// Check convergence every this many iterations (each check synchronises the device;
    /// default 10).
    #[serde(deserialize_with = "named::check_every")]
    pub check_every: usize,
    /// How gradients flow to `cost`, `a` and `b` (default `Implicit`).
    pub gradient: GradientMode,
    /// Evaluate each update as a batched matrix product with a shifted kernel when that is
    /// exact (the cost's spread over ε is moderate; see `docs/math.md`), else the log-sum-exp
    /// over the full matrix. `false` always uses the full log-sum-exp (slower, same result;
    /// default `true`). With [`fast_paths`](Self::fast_paths), CubeCL backends (CUDA, ROCm,
    /// wgpu) take the log-sum-exp for f32 inputs, in one kernel that costs what the product
    /// does.
    pub matmul_updates: bool,
    /// Use the backend's fast path: the fused CPU solver on backends whose tensors live in
    /// host memory (`Flex`, `NdArray`), the one-pass CubeCL kernels on `CubeBackend` (CUDA,
    /// ROCm, wgpu). Both run the same iterations and stopping rule as the composed tensor-op
    /// solver, reading the kernel once per half-iteration (the fused solver also spreads
    /// problems and rows over threads and SIMD loops). `false` runs the composed solver, the
    /// reference implementation, which other backends (burn's `Fusion` included), f64 inputs
    /// and [`GradientMode::Unrolled`] (whose graph records the ops) always use. Results agree
    /// to f32 rounding (default `true`).
    pub fast_paths: bool,
    /// Iteration limit of the conjugate-gradient solve in the implicit backward (default 1000).
    #[serde(deserialize_with = "named::implicit_max_iters")]
    pub implicit_max_iters: usize,
    /// Relative residual at which the implicit backward's conjugate gradients stop (default
    /// 1e-6).
    #[serde(deserialize_with = "named::implicit_tolerance")]
    pub implicit_tolerance: f64,
}

impl Config for SinkhornConfig {}

impl fmt::Display for SinkhornConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&burn::config::config_to_json(self))
    }
}

/// The `with_*` setters both solver configs share (every field after ε and ρ).
macro_rules! solver_setters {
    () => {
        solver_setters! {
            with_max_iters: max_iters: usize,
            with_tolerance: tolerance: f64,
            with_check_every: check_every: usize,
            with_gradient: gradient: GradientMode,
            with_matmul_updates: matmul_updates: bool,
            with_fast_paths: fast_paths: bool,
            with_implicit_max_iters: implicit_max_iters: usize,
            with_implicit_tolerance: implicit_tolerance: f64,
        }
    };
    ($($setter:ident: $field:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
        pub fn $setter(mut self, $field: $ty) -> Self {
            self.$field = $field;
            self
        }
    )*};
}

impl SinkhornConfig {
    /// ε, every other field at its default: 1000 iterations, tolerance 1e-6, a check every 10
    /// iterations, implicit gradients, matrix-product updates and fast paths on, and the
    /// implicit backward's 1000 iterations to 1e-6.
    pub fn new(epsilon: f64) -> Self {
        Self {
            epsilon,
            max_iters: 1000,
            tolerance: 1e-6,
            check_every: 10,
            gradient: GradientMode::Implicit,
            matmul_updates: true,
            fast_paths: FAST_PATHS_DEFAULT,
            implicit_max_iters: 1000,
            implicit_tolerance: 1e-6,
        }
    }

    solver_setters!();
}

/// Deserialisers that name their field in the error. serde's own messages name only the type
/// ("invalid type: null, expected f64"), which does not say which setting of a saved config
/// is wrong.
mod named {
    use burn::serde::{de::Error, Deserialize, Deserializer};

    fn field<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
        name: &str,
        takes: &str,
    ) -> Result<T, D::Error> {
        T::deserialize(deserializer).map_err(|e| {
            let message = e.to_string();
            // serde_json adds the position to the new error again: keep it once.
            let message = message.split(" at line ").next().unwrap_or(&message);
            D::Error::custom(format!("{name}: {message} ({name} takes {takes})"))
        })
    }

    macro_rules! named_fields {
        ($($name:ident: $ty:ty => $takes:literal),* $(,)?) => {$(
            pub(super) fn $name<'de, D: Deserializer<'de>>(deserializer: D) -> Result<$ty, D::Error> {
                field(deserializer, stringify!($name), $takes)
            }
        )*};
    }

    named_fields! {
        epsilon: f64 => "a finite number > 0, e.g. 0.1",
        max_iters: usize => "a whole number >= 1",
        tolerance: f64 => "a finite number >= 0",
        check_every: usize => "a whole number >= 1",
        implicit_max_iters: usize => "a whole number >= 1",
        implicit_tolerance: f64 => "a finite number >= 0",
    }
}

/// Configuration of unbalanced entropic OT with KL-relaxed marginals, see
/// [`unbalanced_sinkhorn`](crate::unbalanced_sinkhorn()).
///
/// ```text
/// min_{P >= 0} <P, C> + ε Σ P (log P - 1) + ρ_a KL(P1 | a) + ρ_b KL(Pᵀ1 | b)
/// ```
///
/// This is POT's `sinkhorn_unbalanced(..., reg_type="entropy")` with `reg = ε` and
/// `reg_m = (ρ_a, ρ_b)`. `ρ = f64::INFINITY` makes that side an exact constraint.
///
/// A burn [`Config`] like the others (`new`, `with_*`, `save`, `load`), written out by hand so
/// that an infinite ρ survives a JSON round trip (it is saved as `"inf"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(crate = "burn::serde")]
pub struct UnbalancedConfig {
    /// Entropic regularisation ε, in cost units. Must be > 0.
    #[serde(deserialize_with = "named::epsilon")]
    pub epsilon: f64,
    /// Strength ρ_a of the KL penalty on the row marginal (`f64::INFINITY`: exact).
    #[serde(with = "crate::penalty_serde")]
    pub rho_a: f64,
    /// Strength ρ_b of the KL penalty on the column marginal (`f64::INFINITY`: exact).
    #[serde(with = "crate::penalty_serde")]
    pub rho_b: f64,
    /// Iteration limit per problem (default 1000).
    #[serde(deserialize_with = "named::max_iters")]
    pub max_iters: usize,
    /// Stop a problem once no log-potential moves more than this in one iteration
    /// (when both sides are exact, the balanced L1 marginal error is used instead; default
    /// 1e-6).
    #[serde(deserialize_with = "named::tolerance")]
    pub tolerance: f64,
    /// Check convergence every this many iterations (each check synchronises the device;
    /// default 10).
    #[serde(deserialize_with = "named::check_every")]
    pub check_every: usize,
    /// How gradients flow to `cost`, `a` and `b` (default `Implicit`).
    pub gradient: GradientMode,
    /// Evaluate each update as a batched matrix product with a shifted kernel when that is
    /// exact (the cost's spread over ε is moderate; see `docs/math.md`), else the log-sum-exp
    /// over the full matrix. `false` always uses the full log-sum-exp (slower, same result;
    /// default `true`). With `fast_paths`, CubeCL backends (CUDA, ROCm, wgpu) take the
    /// log-sum-exp for f32 inputs, in one kernel that costs what the product does.
    pub matmul_updates: bool,
    /// Use the backend's fast path: the fused CPU solver on backends whose tensors live in
    /// host memory (`Flex`, `NdArray`), the one-pass CubeCL kernels on `CubeBackend` (CUDA,
    /// ROCm, wgpu). Both run the same iterations and stopping rule as the composed tensor-op
    /// solver, reading the kernel once per half-iteration (the fused solver also spreads
    /// problems and rows over threads and SIMD loops). `false` runs the composed solver, the
    /// reference implementation, which other backends (burn's `Fusion` included), f64 inputs
    /// and [`GradientMode::Unrolled`] (whose graph records the ops) always use. Results agree
    /// to f32 rounding (default `true`; saved configs may call it `fused_cpu`, its first
    /// name).
    #[serde(default = "fast_paths_default", alias = "fused_cpu")]
    pub fast_paths: bool,
    /// Iteration limit of the conjugate-gradient solve in the implicit backward (default 1000).
    #[serde(deserialize_with = "named::implicit_max_iters")]
    pub implicit_max_iters: usize,
    /// Relative residual at which the implicit backward's conjugate gradients stop (default
    /// 1e-6).
    #[serde(deserialize_with = "named::implicit_tolerance")]
    pub implicit_tolerance: f64,
}

impl Config for UnbalancedConfig {}

/// The default of every config's `fast_paths`: on.
pub(crate) const FAST_PATHS_DEFAULT: bool = true;

/// Configs saved before `fast_paths` (or `fused_cpu`, its first name) existed load with it on.
pub(crate) fn fast_paths_default() -> bool {
    FAST_PATHS_DEFAULT
}

impl fmt::Display for UnbalancedConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&burn::config::config_to_json(self))
    }
}

impl UnbalancedConfig {
    /// ε, ρ_a and ρ_b, every other field at its default (as `SinkhornConfig::new` does).
    pub fn new(epsilon: f64, rho_a: f64, rho_b: f64) -> Self {
        let defaults = SinkhornConfig::new(epsilon);
        Self {
            rho_a,
            rho_b,
            ..Self::from(&defaults)
        }
    }

    solver_setters!();
}

impl UnbalancedConfig {
    /// Damping `λ = ρ/(ρ+ε)` of the row update (1 for an exact constraint).
    pub(crate) fn lambda_a(&self) -> f64 {
        damping(self.rho_a, self.epsilon)
    }

    /// Damping `λ = ρ/(ρ+ε)` of the column update (1 for an exact constraint).
    pub(crate) fn lambda_b(&self) -> f64 {
        damping(self.rho_b, self.epsilon)
    }

    /// Both marginals are exact constraints: the classic balanced problem.
    pub(crate) fn is_balanced(&self) -> bool {
        self.rho_a.is_infinite() && self.rho_b.is_infinite()
    }

    /// Checks every field; called once per solve, before any tensor work.
    pub(crate) fn validate(&self) -> Result<(), OtprefError> {
        if !(self.epsilon.is_finite() && self.epsilon > 0.0) {
            return Err(OtprefError::InvalidParameter(format!(
                "epsilon must be a finite number > 0, got {}; costs scaled to [0, 1] usually \
                 want epsilon between 1e-3 and 1",
                self.epsilon
            )));
        }
        for (name, rho) in [("rho_a", self.rho_a), ("rho_b", self.rho_b)] {
            if rho.is_nan() || rho <= 0.0 {
                return Err(OtprefError::InvalidParameter(format!(
                    "{name} must be > 0 (or f64::INFINITY for an exact marginal), got {rho}"
                )));
            }
        }
        for (name, count) in [
            ("max_iters", self.max_iters),
            ("check_every", self.check_every),
            ("implicit_max_iters", self.implicit_max_iters),
        ] {
            if count == 0 {
                return Err(OtprefError::InvalidParameter(format!(
                    "{name} must be >= 1, got 0"
                )));
            }
        }
        for (name, tol) in [
            ("tolerance", self.tolerance),
            ("implicit_tolerance", self.implicit_tolerance),
        ] {
            if !(tol.is_finite() && tol >= 0.0) {
                return Err(OtprefError::InvalidParameter(format!(
                    "{name} must be a finite number >= 0, got {tol}"
                )));
            }
        }
        Ok(())
    }
}

fn damping(rho: f64, epsilon: f64) -> f64 {
    if rho.is_infinite() {
        1.0
    } else {
        rho / (rho + epsilon)
    }
}

/// A balanced problem is the unbalanced one with both penalties infinite: one solver core.
impl From<&SinkhornConfig> for UnbalancedConfig {
    fn from(c: &SinkhornConfig) -> Self {
        Self {
            epsilon: c.epsilon,
            rho_a: f64::INFINITY,
            rho_b: f64::INFINITY,
            max_iters: c.max_iters,
            tolerance: c.tolerance,
            check_every: c.check_every,
            gradient: c.gradient,
            matmul_updates: c.matmul_updates,
            fast_paths: c.fast_paths,
            implicit_max_iters: c.implicit_max_iters,
            implicit_tolerance: c.implicit_tolerance,
        }
    }
}
