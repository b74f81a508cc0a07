//! One row times a matrix with contiguous rows, for f32: the products of a decoding step at
//! batch 1. (otpref patch: gemm's one-row path ran about 4× slower than torch's on the
//! decoder's matrices, a few MB each.)
//!
//! The output is zeroed, then each pass over `ROWS_PER_PASS` matrix rows (read side by side,
//! each as a contiguous stream) adds their share to each block of `ROW_BLOCK` columns, held in
//! registers for the pass; every element's terms are still added in row order.

/// Columns per block: four AVX-512 vectors of sums.
const ROW_BLOCK: usize = 64;
/// Matrix rows per pass.
const ROWS_PER_PASS: usize = 16;

/// `out[j] = Σ_i row[i] · w[i · w_row_stride + j]` for `j < n`, with the instructions the CPU
/// has (AVX-512, AVX2, or the portable build's).
///
/// # Safety
/// `w` points at `row.len()` rows of `n` readable f32 each, `w_row_stride` apart; `out` at `n`
/// writable f32 that overlap none of them.
pub(crate) unsafe fn row_times_rows(
    row: &[f32],
    w: *const f32,
    w_row_stride: isize,
    out: *mut f32,
    n: usize,
) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    {
        if std::is_x86_feature_detected!("avx512f") {
            return unsafe { row_times_rows_avx512(row, w, w_row_stride, out, n) };
        }
        if std::is_x86_feature_detected!("avx2") {
            return unsafe { row_times_rows_avx2(row, w, w_row_stride, out, n) };
        }
    }
    unsafe { row_times_rows_portable(row, w, w_row_stride, out, n) }
}

/// # Safety
/// As [`row_times_rows`], on a CPU with AVX-512F.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx512f")]
unsafe fn row_times_rows_avx512(
    row: &[f32],
    w: *const f32,
    w_row_stride: isize,
    out: *mut f32,
    n: usize,
) {
    unsafe { row_times_rows_portable(row, w, w_row_stride, out, n) }
}

/// # Safety
/// As [`row_times_rows`], on a CPU with AVX2.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
unsafe fn row_times_rows_avx2(
    row: &[f32],
    w: *const f32,
    w_row_stride: isize,
    out: *mut f32,
    n: usize,
) {
    unsafe { row_times_rows_portable(row, w, w_row_stride, out, n) }
}

/// [`row_times_rows`]'s loop, compiled for whichever instructions its caller enables.
///
/// # Safety
/// As [`row_times_rows`].
#[inline(always)]
unsafe fn row_times_rows_portable(
    row: &[f32],
    w: *const f32,
    w_row_stride: isize,
    out: *mut f32,
    n: usize,
) {
    // SAFETY: `out` holds `n` elements of its own.
    let out = unsafe {
        core::ptr::write_bytes(out, 0, n);
        core::slice::from_raw_parts_mut(out, n)
    };
    for (pass, coefficients) in row.chunks(ROWS_PER_PASS).enumerate() {
        let first_row = (pass * ROWS_PER_PASS) as isize;
        // SAFETY: each of these matrix rows holds `n` columns (a last, partial pass repeats
        // its last row in the unused slots, which the zip below never reaches).
        let rows: [&[f32]; ROWS_PER_PASS] = core::array::from_fn(|i| unsafe {
            let i = i.min(coefficients.len() - 1) as isize;
            core::slice::from_raw_parts(w.offset((first_row + i) * w_row_stride), n)
        });
        let rows = &rows[..coefficients.len()];
        let mut blocks = out.chunks_exact_mut(ROW_BLOCK);
        for (block, sums) in (&mut blocks).enumerate() {
            let sums: &mut [f32; ROW_BLOCK] = sums.try_into().unwrap();
            let col0 = block * ROW_BLOCK;
            for (&a, weights) in coefficients.iter().zip(rows) {
                let weights: &[f32; ROW_BLOCK] =
                    weights[col0..col0 + ROW_BLOCK].try_into().unwrap();
                for (sum, &v) in sums.iter_mut().zip(weights) {
                    *sum += a * v;
                }
            }
        }
        let tail = blocks.into_remainder();
        let col0 = n - tail.len();
        for (&a, weights) in coefficients.iter().zip(rows) {
            for (sum, &v) in tail.iter_mut().zip(&weights[col0..]) {
                *sum += a * v;
            }
        }
    }
}
