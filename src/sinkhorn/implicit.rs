//! Implicit differentiation of the Sinkhorn fixed point, as a custom autodiff backward: the
//! forward solves on the inner backend, and the backward returns the fixed point's
//! vector-Jacobian product (`adjoint.rs` for the mathematics and the composed reference; the
//! fused CPU solver's host version where it serves).

use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
    Autodiff,
};
use burn::tensor::{backend::Backend, Tensor, TensorPrimitive};

use super::adjoint::{fixed_point_vjp, InputGrads};
use super::backend::{ImplicitSolve, OtBackend};
use super::config::UnbalancedConfig;
use super::solver::solve;
use super::transport::Transport;
use crate::error::OtprefError;
use crate::precision::{narrowed, widened};

/// The implicit mode's solve, handed to [`OtBackend::solve_implicit`].
pub(super) struct Implicit;

impl ImplicitSolve for Implicit {
    fn plain<B: OtBackend>(
        cost: Tensor<B, 3>,
        a: Tensor<B, 2>,
        b: Tensor<B, 2>,
        config: &UnbalancedConfig,
    ) -> Result<Transport<B>, OtprefError> {
        solve(cost, a, b, config)
    }

    fn tracked<B: OtBackend, C: CheckpointStrategy>(
        cost: Tensor<Autodiff<B, C>, 3>,
        a: Tensor<Autodiff<B, C>, 2>,
        b: Tensor<Autodiff<B, C>, 2>,
        config: &UnbalancedConfig,
    ) -> Result<Transport<Autodiff<B, C>>, OtprefError> {
        let cost = cost.into_primitive().tensor();
        let a = a.into_primitive().tensor();
        let b = b.into_primitive().tensor();
        let inner_a = inner::<B, 2>(a.primitive.clone());
        let inner_b = inner::<B, 2>(b.primitive.clone());
        let solved = solve(
            inner::<B, 3>(cost.primitive.clone()),
            inner_a.clone(),
            inner_b.clone(),
            config,
        )?;
        let [batch, n, m] = solved.plan.dims();
        let packed = pack(solved.plan.clone(), solved.f, solved.g)
            .into_primitive()
            .tensor();

        let state = ImplicitState {
            plan: solved.plan.into_primitive().tensor(),
            a: inner_a.into_primitive().tensor(),
            b: inner_b.into_primitive().tensor(),
            config: config.clone(),
        };
        let packed = match ImplicitBackward
            .prepare::<C>([cost.node.clone(), a.node.clone(), b.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(state, packed),
            OpsKind::UnTracked(prep) => prep.finish(packed),
        };
        let packed = Tensor::<Autodiff<B, C>, 1>::from_primitive(TensorPrimitive::Float(packed));
        let (plan, f, g) = unpack(packed, [batch, n, m]);
        Ok(Transport {
            plan,
            f,
            g,
            iterations: solved.iterations,
            converged: solved.converged,
            marginal_error: solved.marginal_error,
        })
    }
}

fn inner<B: Backend, const D: usize>(primitive: B::FloatTensorPrimitive) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(primitive))
}

/// burn's custom backward has one output, so plan, f and g travel as one flat tensor
/// (slicing routes all three gradients back to it). Flat and in this order, each part is a
/// contiguous run, so the slices are views that later ops read at full speed.
fn pack<B: Backend>(plan: Tensor<B, 3>, f: Tensor<B, 2>, g: Tensor<B, 2>) -> Tensor<B, 1> {
    Tensor::cat(
        vec![plan.flatten(0, 2), f.flatten(0, 1), g.flatten(0, 1)],
        0,
    )
}

/// The plan `[batch, n, m]`, `f` `[batch, n]` and `g` `[batch, m]` of [`pack`]'s output.
fn unpack<B: Backend>(
    packed: Tensor<B, 1>,
    [batch, n, m]: [usize; 3],
) -> (Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2>) {
    let (plan_end, f_end) = (batch * n * m, batch * n * (m + 1));
    (
        packed.clone().narrow(0, 0, plan_end).reshape([batch, n, m]),
        packed
            .clone()
            .narrow(0, plan_end, batch * n)
            .reshape([batch, n]),
        packed.narrow(0, f_end, batch * m).reshape([batch, m]),
    )
}

#[derive(Debug)]
struct ImplicitBackward;

#[derive(Debug, Clone)]
struct ImplicitState<B: Backend> {
    plan: B::FloatTensorPrimitive,
    a: B::FloatTensorPrimitive,
    b: B::FloatTensorPrimitive,
    config: UnbalancedConfig,
}

impl<B: OtBackend> Backward<B, 3> for ImplicitBackward {
    type State = ImplicitState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node_cost, node_a, node_b] = ops.parents;
        let grad = inner::<B, 1>(grads.consume::<B>(&ops.node));
        let state = ops.state;
        let plan = inner::<B, 3>(state.plan);
        let vjp = host_or_composed_vjp(plan, inner(state.a), inner(state.b), grad, &state.config);
        for (node, grad) in [
            (node_cost, vjp.cost.into_primitive().tensor()),
            (node_a, vjp.a.into_primitive().tensor()),
            (node_b, vjp.b.into_primitive().tensor()),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// The vector-Jacobian product for the packed output's gradient `grad`: on the fused CPU
/// solver's backends and dtypes its host version, otherwise the composed one below.
fn host_or_composed_vjp<B: OtBackend>(
    plan: Tensor<B, 3>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    grad: Tensor<B, 1>,
    config: &UnbalancedConfig,
) -> InputGrads<B> {
    #[cfg(feature = "fused-cpu")]
    if super::backend::fused_serves::<B>(config, plan.dtype()) {
        return super::fused::fixed_point_vjp(plan, a, b, grad, config);
    }
    // In f32 for half-precision inputs, as the forward; the gradients in the inputs' dtype.
    let dtype = plan.dtype();
    let (grad_plan, grad_f, grad_g) = unpack(widened(grad), plan.dims());
    let grads = fixed_point_vjp(
        widened(plan),
        widened(a),
        widened(b),
        grad_plan,
        grad_f,
        grad_g,
        config,
    );
    InputGrads {
        cost: narrowed(grads.cost, dtype),
        a: narrowed(grads.a, dtype),
        b: narrowed(grads.b, dtype),
    }
}
