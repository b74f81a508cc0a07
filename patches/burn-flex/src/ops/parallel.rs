//! Element-wise loops split over rayon's pool. (otpref patch: burn-flex 0.21 ran them on the
//! calling thread, so between two matrix products every other core sat idle.)
//!
//! Each helper hands its closure whole chunks of the output, with the chunk's offset, so that
//! the closure's inner loop stays the same tight (vectorisable) loop as before; small inputs
//! stay on the calling thread.

use alloc::vec::Vec;
use core::mem::MaybeUninit;

/// Elements below which a loop stays on the calling thread (burn-flex's own threshold for its
/// row-parallel loops): waking a sleeping worker costs more than such a loop saves. Measured on
/// the trainers' step (2 cores): 256 Ki gave +6% tokens/s over 32 Ki, and 1 Mi -8%.
const SERIAL_BELOW: usize = 256 * 1024;

/// Runs `f(offset, chunk)` over `out` cut into one chunk per thread (multiples of 64
/// elements), in parallel when `out` is large.
pub(crate) fn for_chunks<T: Send>(out: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    #[cfg(feature = "rayon")]
    if out.len() >= SERIAL_BELOW {
        use rayon::prelude::*;
        let threads = rayon::current_num_threads().max(1);
        let chunk = out.len().div_ceil(threads).next_multiple_of(64);
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(index, part)| f(index * chunk, part));
        return;
    }
    f(0, out)
}

/// `f(dst_chunk, src_chunk)` over equal-length `dst` and `src`.
pub(crate) fn zip_inplace<A: Send, B: Sync>(
    dst: &mut [A],
    src: &[B],
    f: impl Fn(&mut [A], &[B]) + Sync,
) {
    debug_assert_eq!(dst.len(), src.len());
    for_chunks(dst, |offset, part| {
        f(part, &src[offset..offset + part.len()])
    })
}

/// `x = op(x)` for every element of `dst`.
pub(crate) fn map_inplace<A: Copy + Send>(dst: &mut [A], op: impl Fn(A) -> A + Sync) {
    for_chunks(dst, |_, part| {
        for x in part.iter_mut() {
            *x = op(*x);
        }
    })
}

/// `op(x)` for every element of `src`, collected.
pub(crate) fn collect_map<A: Copy + Sync, R: Send>(
    src: &[A],
    op: impl Fn(A) -> R + Sync,
) -> Vec<R> {
    collect(src.len(), |offset, part| {
        for (slot, &x) in part.iter_mut().zip(&src[offset..]) {
            slot.write(op(x));
        }
    })
}

/// `op(a, b)` for every pair of elements of equal-length `a` and `b`, collected.
pub(crate) fn collect_zip<A: Copy + Sync, B: Copy + Sync, R: Send>(
    a: &[A],
    b: &[B],
    op: impl Fn(A, B) -> R + Sync,
) -> Vec<R> {
    debug_assert_eq!(a.len(), b.len());
    collect(a.len(), |offset, part| {
        let inputs = a[offset..].iter().zip(&b[offset..]);
        for (slot, (&x, &y)) in part.iter_mut().zip(inputs) {
            slot.write(op(x, y));
        }
    })
}

/// A vector of `len` elements, each chunk written by `fill(offset, chunk)`, which must write
/// every slot of its chunk.
fn collect<R: Send>(len: usize, fill: impl Fn(usize, &mut [MaybeUninit<R>]) + Sync) -> Vec<R> {
    let mut out = Vec::with_capacity(len);
    for_chunks(&mut out.spare_capacity_mut()[..len], fill);
    // SAFETY: every chunk of the first `len` slots was written by `fill`.
    unsafe { out.set_len(len) };
    out
}

/// The row-major `rows × cols` vector whose element `(r, c)` is `at(r, c)`, filled tile by
/// tile (so that inputs read down the columns, such as a transposed view, are read from
/// cache rather than one cache line per element) and, when large, in parallel over bands of
/// rows.
pub(crate) fn collect_2d_tiled<R: Send>(
    rows: usize,
    cols: usize,
    at: impl Fn(usize, usize) -> R + Sync,
) -> Vec<R> {
    const TILE: usize = 32;
    let len = rows * cols;
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let fill_band = |row0: usize, band: &mut [MaybeUninit<R>]| {
        let band_rows = band.len() / cols;
        for col0 in (0..cols).step_by(TILE) {
            for r in 0..band_rows {
                for c in col0..(col0 + TILE).min(cols) {
                    band[r * cols + c].write(at(row0 + r, c));
                }
            }
        }
    };
    for_rows(
        &mut out.spare_capacity_mut()[..len],
        TILE * cols,
        |band, part| fill_band(band * TILE, part),
    );
    // SAFETY: every band of the first `len` slots was written by `fill_band`.
    unsafe { out.set_len(len) };
    out
}

/// `f(row, chunk)` over `out` cut into rows of `row_len` elements, in parallel (a few
/// thousand elements per task) when `out` is large.
pub(crate) fn for_rows<T: Send>(out: &mut [T], row_len: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if row_len == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    if out.len() >= SERIAL_BELOW {
        use rayon::prelude::*;
        out.par_chunks_mut(row_len)
            .with_min_len(4096usize.div_ceil(row_len))
            .enumerate()
            .for_each(|(row, part)| f(row, part));
        return;
    }
    for (row, part) in out.chunks_mut(row_len).enumerate() {
        f(row, part);
    }
}
