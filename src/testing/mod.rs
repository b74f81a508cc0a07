//! Property tests of OT for your own code (feature `testing`): proptest strategies for padded
//! batched OT problems, OTPO, DPO and APLOT inputs, and invariant checks that say what is
//! wrong, where and by how much.
//!
//! otpref's own suite tests itself with these; a trainer that builds costs from its model's
//! hidden states, masks padded batches its own way or wraps [`sinkhorn`](crate::sinkhorn()) in
//! its loss can check the same invariants on its own inputs:
//!
//! - [`check_balanced_marginals`], [`check_unbalanced_marginals`] (the KL-relaxed marginals
//!   at the solver's optimum), [`check_plan_support`] (non-negative, zero on padding);
//! - [`check_weight_budget`] (OTPO's and the other schemes' weights), [`check_finite`], and
//!   [`check_gradient`], a finite-difference check of any scalar function of a tensor.
//!
//! Every check returns `Result<(), Violation>`; a [`Violation`] is a `std::error::Error`, so
//! it converts to proptest's `TestCaseError` (`?` works inside a property) and to `String`.
//!
//! A user's property test: "my cost construction plus `sinkhorn` gives couplings of my
//! masses", padding included (the padded costs are NaN here: a correct pipeline never reads
//! them).
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{DType, Tensor};
//! use otpref::testing::{
//!     check_balanced_marginals, check_plan_support, epsilons, ot_batches, pad_problems,
//!     OtBatchSpec,
//! };
//! use otpref::{sinkhorn, SinkhornConfig};
//! use proptest::test_runner::{Config, TestCaseError, TestRunner};
//!
//! /// My cost construction (here: a square root stretched to [0, 2)).
//! fn my_cost(raw: Tensor<Flex, 3>) -> Tensor<Flex, 3> {
//!     raw.sqrt() * 2.0
//! }
//!
//! let mut runner = TestRunner::new(Config::with_cases(8));
//! let inputs = (ot_batches(OtBatchSpec::default()), epsilons(0.1..=1.0));
//! runner
//!     .run(&inputs, |(problems, epsilon)| {
//!         let device = Default::default();
//!         let (cost, a, b) = pad_problems::<Flex>(&problems, f64::NAN, DType::F32, &device);
//!         let config = SinkhornConfig::new(epsilon).with_max_iters(5000);
//!         let transport = sinkhorn(my_cost(cost), a.clone(), b.clone(), &config)
//!             .map_err(|e| TestCaseError::fail(e.to_string()))?;
//!         check_plan_support(transport.plan.clone(), a.clone(), b.clone())?;
//!         check_balanced_marginals(transport.plan, a, b, 1e-5)?;
//!         Ok(())
//!     })
//!     .unwrap();
//! ```

mod gradients;
mod invariants;
mod problems;
mod strategies;

pub use gradients::check_gradient;
pub use invariants::{
    check_balanced_marginals, check_finite, check_plan_support, check_unbalanced_marginals,
    check_weight_budget, Violation,
};
pub use problems::{host_values, pad_problems, tensor, AplotCase, DpoCase, OtProblem, OtpoCase};
pub use strategies::{
    aplot_cases, dpo_cases, epsilons, ot_batches, ot_problem, otpo_cases, Masses, OtBatchSpec,
};
