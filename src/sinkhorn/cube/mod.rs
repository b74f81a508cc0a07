//! The solver's row and column reductions as single CubeCL kernels, for every CubeCL backend
//! (CUDA, ROCm, wgpu; feature `cubecl`). They serve [`OtBackend::reduce_lines`] for
//! `CubeBackend`, so that each Sinkhorn half-iteration
//! reads the `[batch, n, m]` kernel once, where the composed ops materialise and re-read
//! several tensors of that size, and the implicit backward's plan-vector products do the
//! same.
//!
//! The only host synchronisation left in the iterations is the solver's periodic convergence
//! check. Problems too large for one launch grid, and dtypes other than f32 (the solver
//! computes half precision in f32), take the composed ops instead; so do burn's `Fusion<B>`
//! tensors, which are not `CubeBackend` tensors, and the unrolled mode's tracked tensors.
//!
//! [`OtBackend::reduce_lines`]: crate::OtBackend::reduce_lines

mod kernels;

use burn::tensor::{DType, Shape, Tensor, TensorPrimitive};
use burn_cubecl::cubecl;
use burn_cubecl::{
    kernel::into_contiguous, ops::numeric::empty_device_dtype, tensor::CubeTensor, BoolElement,
    CubeBackend, CubeRuntime, FloatElement, IntElement,
};
use cubecl::prelude::*;
use cubecl::{features::Plane, ir::DeviceProperties};

use super::reductions::{Axis, Reduction};

/// The reduction of every row (or column) of `matrix` `[batch, n, m]` against `weights`
/// (`[batch, m]` for rows, `[batch, n]` for columns) in one kernel, or `None` where the kernel
/// does not serve (see the module docs): the caller then composes tensor ops.
pub(crate) fn reduce<R, F, I, BT>(
    matrix: &Tensor<CubeBackend<R, F, I, BT>, 3>,
    weights: &Tensor<CubeBackend<R, F, I, BT>, 2>,
    axis: Axis,
    reduction: Reduction,
) -> Option<Tensor<CubeBackend<R, F, I, BT>, 2>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let client = R::client(&matrix.device());
    let plane_width = device_plane_width(client.properties());
    reduce_with(matrix, weights, axis, reduction, plane_width)
}

/// The plane width the row kernel combines in on this device, or 0 for shared memory only:
/// planes need the device's plane operations and a fixed width that divides a cube's row
/// (32 lanes); a 64-wide plane would span two rows. It takes planes to hold consecutive units
/// (the first dimension fastest): so CUDA defines warps, and so the Vulkan drivers form
/// subgroups (lavapipe's, in the tests, included).
fn device_plane_width(properties: &DeviceProperties) -> u32 {
    let hardware = &properties.hardware;
    let width = hardware.plane_size_max;
    let usable = properties.features.plane.contains(Plane::Ops)
        && hardware.plane_size_min == width
        && width > 0
        && kernels::LANES.is_multiple_of(width);
    if usable {
        width
    } else {
        0
    }
}

/// [`reduce`] with the row kernel combining in planes of `plane_width` units (0: in shared
/// memory only). Tests force a width on devices whose plane operations CubeCL leaves off.
fn reduce_with<R, F, I, BT>(
    matrix: &Tensor<CubeBackend<R, F, I, BT>, 3>,
    weights: &Tensor<CubeBackend<R, F, I, BT>, 2>,
    axis: Axis,
    reduction: Reduction,
    plane_width: u32,
) -> Option<Tensor<CubeBackend<R, F, I, BT>, 2>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let [batch, n, m] = matrix.dims();
    if matrix.dtype() != DType::F32 || weights.dtype() != DType::F32 {
        return None;
    }
    let matrix = primitive(matrix.clone());
    let weights = primitive(weights.clone());
    let (lines, cubes_x) = match axis {
        Axis::Rows => (n, n.div_ceil(kernels::GROUPS as usize)),
        Axis::Columns => (m, m.div_ceil(kernels::LANES as usize)),
    };
    let max_cubes = matrix.client.properties().hardware.max_cube_count;
    // The kernels index with 32-bit offsets.
    let fits = batch * n * m < (1 << 31)
        && cubes_x <= max_cubes.0 as usize
        && batch <= max_cubes.1 as usize;
    if !fits || batch * n * m == 0 {
        return None;
    }

    let matrix = into_contiguous(matrix);
    let weights = into_contiguous(weights);
    let client = matrix.client.clone();
    let output = empty_device_dtype::<R>(
        client.clone(),
        matrix.device.clone(),
        Shape::new([batch, lines]),
        DType::F32,
    );
    let count = CubeCount::Static(cubes_x as u32, batch as u32, 1);
    let dim = CubeDim::new_2d(kernels::LANES, kernels::GROUPS);
    let log_sum_exp = reduction == Reduction::LogSumExp;
    let dtype = StorageType::from(DType::F32);
    let (matrix, weights, out) = (
        matrix.into_tensor_arg(),
        weights.into_tensor_arg(),
        output.clone().into_tensor_arg(),
    );
    // Launches are queued: no synchronisation with the host.
    match axis {
        Axis::Rows => kernels::reduce_rows::launch::<R>(
            &client,
            count,
            dim,
            matrix,
            weights,
            out,
            log_sum_exp,
            plane_width,
            dtype,
        ),
        Axis::Columns => kernels::reduce_columns::launch::<R>(
            &client,
            count,
            dim,
            matrix,
            weights,
            out,
            log_sum_exp,
            dtype,
        ),
    }
    Some(Tensor::from_primitive(TensorPrimitive::Float(output)))
}

fn primitive<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement, const D: usize>(
    tensor: Tensor<CubeBackend<R, F, I, BT>, D>,
) -> CubeTensor<R> {
    tensor.into_primitive().tensor()
}

#[cfg(all(test, feature = "wgpu-tests"))]
mod tests;
