//! [`OtBackend`] for every backend burn 0.21 ships, each behind the cargo feature of the same
//! name (burn's `cpu` backend, whose build downloads LLVM, has no feature of its own: it is a
//! CubeCL backend, covered with the `cubecl` feature). The trait's default methods fit any
//! backend without autodiff, so each impl is empty;
//! they are generic over the backend's element types (`NdArray<f64>`, `Cuda<half::f16>`), and
//! the `Autodiff<B>` impl in `backend.rs` covers each of them with autodiff.
//!
//! Rust's orphan rule stops users from writing these impls themselves (both the trait and the
//! backend types are foreign to their crate), which is why they all live here.

use super::backend::OtBackend;

#[cfg(feature = "flex")]
impl OtBackend for burn::backend::Flex {
    const HOST_MEMORY: bool = true;
}

#[cfg(feature = "ndarray")]
impl<E, I, Q> OtBackend for burn::backend::NdArray<E, I, Q>
where
    E: burn::backend::ndarray::FloatNdArrayElement,
    I: burn::backend::ndarray::IntNdArrayElement,
    Q: burn::backend::ndarray::QuantElement,
    burn::backend::ndarray::NdArrayTensor:
        From<burn::backend::ndarray::SharedArray<E>> + From<burn::backend::ndarray::SharedArray<I>>,
{
    const HOST_MEMORY: bool = true;
}

#[cfg(feature = "candle")]
#[allow(deprecated)] // burn 0.21 deprecates burn-candle; it still ships, so it is still supported
impl<F, I> OtBackend for burn::backend::Candle<F, I>
where
    F: burn::backend::candle::FloatCandleElement,
    I: burn::backend::candle::IntCandleElement,
{
}

#[cfg(feature = "tch")]
impl<E: burn::backend::libtorch::TchElement> OtBackend for burn::backend::LibTorch<E> {}

#[cfg(feature = "router")]
impl<R: burn::backend::router::RunnerChannel> OtBackend
    for burn::backend::router::BackendRouter<R>
{
}

/// CUDA, ROCm and wgpu (Vulkan, Metal, WebGPU) are all `CubeBackend<Runtime, ..>` without
/// fusion; with burn's `fusion` feature they are `Fusion<CubeBackend<..>>`. Both are covered,
/// so otpref works whichever way a user's burn is configured.
#[cfg(feature = "cubecl")]
mod cubecl {
    use super::OtBackend;
    use crate::error::OtprefError;
    use crate::sinkhorn::cube::reduce;
    use crate::sinkhorn::reductions::{self, Axis, Reduction};
    use burn::tensor::Tensor;
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

    /// The solver's reductions run as single kernels (`sinkhorn/cube/`).
    impl<R, F, I, BT> OtBackend for CubeBackend<R, F, I, BT>
    where
        R: CubeRuntime,
        F: FloatElement,
        I: IntElement,
        BT: BoolElement,
    {
        const ONE_PASS_REDUCTIONS: bool = true;

        fn reduce_lines(
            matrix: Tensor<Self, 3>,
            weights: Tensor<Self, 2>,
            axis: Axis,
            reduction: Reduction,
        ) -> Result<Tensor<Self, 2>, OtprefError> {
            reductions::check_operands(&matrix, &weights, axis)?;
            Ok(reduce(&matrix, &weights, axis, reduction)
                .unwrap_or_else(|| reductions::composed(matrix, weights, axis, reduction)))
        }
    }

    /// With burn's fusion the tensors are fusion handles, which the kernels do not take: the
    /// solver composes tensor ops (which fusion may fuse).
    impl<B: burn_fusion::FusionBackend + OtBackend> OtBackend for burn_fusion::Fusion<B> {}
}

/// Compile-time proof that burn's own type aliases for each enabled backend, as configured in
/// this build (with or without fusion), and their `Autodiff`, implement [`OtBackend`].
#[allow(dead_code, deprecated)]
fn every_enabled_backend_is_covered() {
    fn covered<B: OtBackend>() {}
    #[allow(unused_imports)] // with no backend feature on
    use burn::backend::Autodiff;
    #[cfg(feature = "flex")]
    covered::<Autodiff<burn::backend::Flex>>();
    #[cfg(feature = "ndarray")]
    covered::<Autodiff<burn::backend::NdArray<f64>>>();
    #[cfg(feature = "candle")]
    covered::<Autodiff<burn::backend::Candle>>();
    #[cfg(feature = "tch")]
    covered::<Autodiff<burn::backend::LibTorch>>();
    #[cfg(feature = "cuda")]
    covered::<Autodiff<burn::backend::Cuda>>();
    #[cfg(feature = "rocm")]
    covered::<Autodiff<burn::backend::Rocm>>();
    #[cfg(feature = "wgpu")]
    covered::<Autodiff<burn::backend::Wgpu>>();
    #[cfg(feature = "vulkan")]
    covered::<Autodiff<burn::backend::Vulkan>>();
    #[cfg(feature = "metal")]
    covered::<Autodiff<burn::backend::Metal>>();
    #[cfg(feature = "webgpu")]
    covered::<Autodiff<burn::backend::WebGpu>>();
}
