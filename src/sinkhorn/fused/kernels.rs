//! The fused solver's passes over a block of kernel rows (`[rows, width]`, row-major), each
//! compiled for the CPU's vector instructions. A half-iteration is one of them per block of
//! rows: the row update reads each row once (a dot product or a log-sum-exp), the column
//! update folds each row into column accumulators.

use super::simd::{add_scaled, dispatched, dot, exp, ln, log_sum_exp_of_sum, max, LANES};

/// What one pass over a cost found while scaling it to `-C/ε`.
pub(super) struct CostScan {
    /// Largest and smallest `-C/ε`.
    pub top: f32,
    pub bottom: f32,
    /// Whether every cost entry, and every `-C/ε`, is finite.
    pub cost_finite: bool,
    pub kernel_finite: bool,
}

dispatched! {
    /// `values *= scale` (a cost to `-C/ε`, as the composed solver computes it), with the
    /// extremes and finiteness of both.
    pub(super) fn scale_in_place(values: &mut [f32], scale: f32) -> CostScan {
        let mut top = [f32::NEG_INFINITY; LANES];
        let mut bottom = [f32::INFINITY; LANES];
        // x * 0 is 0 for finite x and NaN otherwise: a sum of them is 0 iff all are finite.
        let mut cost_poison = [0.0f32; LANES];
        let mut kernel_poison = [0.0f32; LANES];
        let (chunks, tail) = values.as_chunks_mut::<LANES>();
        for chunk in chunks {
            for k in 0..LANES {
                let cost = chunk[k];
                let kernel = cost * scale;
                chunk[k] = kernel;
                cost_poison[k] += cost * 0.0;
                kernel_poison[k] += kernel * 0.0;
                top[k] = top[k].max(kernel);
                bottom[k] = bottom[k].min(kernel);
            }
        }
        let (mut cost_ok, mut kernel_ok) = (true, true);
        let (mut high, mut low) = (f32::NEG_INFINITY, f32::INFINITY);
        for v in tail {
            cost_ok &= v.is_finite();
            *v *= scale;
            kernel_ok &= v.is_finite();
            high = high.max(*v);
            low = low.min(*v);
        }
        for k in 0..LANES {
            high = high.max(top[k]);
            low = low.min(bottom[k]);
        }
        CostScan {
            top: high,
            bottom: low,
            cost_finite: cost_ok && cost_poison.iter().all(|p| *p == 0.0),
            kernel_finite: kernel_ok && kernel_poison.iter().all(|p| *p == 0.0),
        }
    }
}

dispatched! {
    /// `values = exp(values - shift)`: `-C/ε` to the shifted kernel `E`.
    pub(super) fn exp_shifted_in_place(values: &mut [f32], shift: f32) {
        for v in values {
            *v = exp(*v - shift);
        }
    }
}

dispatched! {
    /// `values = ln(values) + offset`: column sums to log-sum-exps, or the shifted kernel `E`
    /// back to `-C/ε` (up to rounding).
    pub(super) fn ln_plus_in_place(values: &mut [f32], offset: f32) {
        for v in values {
            *v = ln(*v) + offset;
        }
    }
}

dispatched! {
    /// `out = exp(w - max w)`, returning `max w`: weights scaled so that the largest is 1.
    pub(super) fn exp_below_max(w: &[f32], out: &mut [f32]) -> f32 {
        let top = max(w);
        for (o, w) in out.iter_mut().zip(w) {
            *o = exp(w - top);
        }
        top
    }
}

dispatched! {
    /// `out_i = ln(Σ_j E_ij v_j) + offset`: the shifted form's row log-sum-exp.
    pub(super) fn log_dots(rows: &[f32], width: usize, v: &[f32], offset: f32, out: &mut [f32]) {
        for (row, out) in rows.chunks_exact(width).zip(out.iter_mut()) {
            *out = dot(row, v);
        }
        for out in out {
            *out = ln(*out) + offset;
        }
    }
}

dispatched! {
    /// `out_i = LSE_j(K_ij + w_j)`: the log form's row log-sum-exp.
    pub(super) fn log_sum_exps(rows: &[f32], width: usize, w: &[f32], out: &mut [f32]) {
        for (row, out) in rows.chunks_exact(width).zip(out) {
            *out = log_sum_exp_of_sum(row, w);
        }
    }
}

dispatched! {
    /// `acc_j += Σ_i u_i E_ij`: the shifted form's column sums, one row at a time.
    pub(super) fn add_scaled_rows(rows: &[f32], width: usize, u: &[f32], acc: &mut [f32]) {
        for (row, u) in rows.chunks_exact(width).zip(u) {
            add_scaled(acc, *u, row);
        }
    }
}

dispatched! {
    /// `acc_j = max(acc_j, max_i K_ij + w_i)`: the log form's column maxima.
    pub(super) fn max_rows(rows: &[f32], width: usize, w: &[f32], acc: &mut [f32]) {
        for (row, w) in rows.chunks_exact(width).zip(w) {
            for (a, k) in acc.iter_mut().zip(row) {
                *a = a.max(k + w);
            }
        }
    }
}

dispatched! {
    /// `acc_j += Σ_i exp(K_ij + w_i - tops_j)`: the log form's column sums below the maxima.
    pub(super) fn add_exp_rows(rows: &[f32], width: usize, w: &[f32], tops: &[f32], acc: &mut [f32]) {
        for (row, w) in rows.chunks_exact(width).zip(w) {
            for ((a, k), t) in acc.iter_mut().zip(row).zip(tops) {
                *a += exp(k + w - t);
            }
        }
    }
}

dispatched! {
    /// `E_ij = u_i E_ij v_j`: the plan from the shifted kernel and its scalings.
    pub(super) fn scale_rows_and_columns(rows: &mut [f32], width: usize, u: &[f32], v: &[f32]) {
        for (row, u) in rows.chunks_exact_mut(width).zip(u) {
            for (p, v) in row.iter_mut().zip(v) {
                *p *= u * v;
            }
        }
    }
}

dispatched! {
    /// `K_ij = exp((r_i + c_j) + K_ij)`: the plan from `-C/ε` and the log scalings, summed in
    /// the composed solver's order (potentials and `-C/ε` can be large and nearly cancel).
    pub(super) fn exp_of_sums(rows: &mut [f32], width: usize, r: &[f32], c: &[f32]) {
        for (row, r) in rows.chunks_exact_mut(width).zip(r) {
            for (p, c) in row.iter_mut().zip(c) {
                *p = exp((r + c) + *p);
            }
        }
    }
}

dispatched! {
    /// Whether every entry is finite.
    pub(super) fn all_finite(values: &[f32]) -> bool {
        let (chunks, tail) = values.as_chunks::<LANES>();
        let mut poison = [0.0f32; LANES];
        for chunk in chunks {
            for k in 0..LANES {
                poison[k] += chunk[k] * 0.0;
            }
        }
        poison.iter().all(|p| *p == 0.0) && tail.iter().all(|v| v.is_finite())
    }
}

dispatched! {
    /// `out_i = Σ_j M_ij v_j`.
    pub(super) fn dots(rows: &[f32], width: usize, v: &[f32], out: &mut [f32]) {
        for (row, out) in rows.chunks_exact(width).zip(out) {
            *out = dot(row, v);
        }
    }
}

dispatched! {
    /// One pass over a plan `P` and the loss's gradient `G` with respect to it: the row sums
    /// `P1` and `(G ⊙ P)1` into `row_sums` and `weighted_row_sums`, and the column sums
    /// `Pᵀ1` and `(G ⊙ P)ᵀ1` added to `col_sums` and `weighted_col_sums`.
    pub(super) fn plan_sums(
        plan: &[f32],
        grad: &[f32],
        width: usize,
        row_sums: &mut [f32],
        weighted_row_sums: &mut [f32],
        col_sums: &mut [f32],
        weighted_col_sums: &mut [f32],
    ) {
        let rows = plan.chunks_exact(width).zip(grad.chunks_exact(width));
        for ((p_row, g_row), (sum, weighted)) in
            rows.zip(row_sums.iter_mut().zip(weighted_row_sums.iter_mut()))
        {
            let mut row_sum = [0.0f32; LANES];
            let mut row_weighted = [0.0f32; LANES];
            let (p_chunks, p_tail) = p_row.as_chunks::<LANES>();
            let (g_chunks, g_tail) = g_row.as_chunks::<LANES>();
            let (q_chunks, q_tail) = col_sums.as_chunks_mut::<LANES>();
            let (w_chunks, w_tail) = weighted_col_sums.as_chunks_mut::<LANES>();
            for (((p, g), q), w) in p_chunks.iter().zip(g_chunks).zip(q_chunks).zip(w_chunks) {
                for k in 0..LANES {
                    let gp = g[k] * p[k];
                    row_sum[k] += p[k];
                    row_weighted[k] += gp;
                    q[k] += p[k];
                    w[k] += gp;
                }
            }
            let (mut tail_sum, mut tail_weighted) = (0.0f32, 0.0f32);
            for (((p, g), q), w) in p_tail.iter().zip(g_tail).zip(q_tail).zip(w_tail) {
                tail_sum += p;
                tail_weighted += g * p;
                *q += p;
                *w += g * p;
            }
            *sum = row_sum.iter().sum::<f32>() + tail_sum;
            *weighted = row_weighted.iter().sum::<f32>() + tail_weighted;
        }
    }
}

dispatched! {
    /// `P_ij = P_ij ((w_i + v_j) - G_ij) / ε`: the gradient with respect to the cost, in
    /// place of the plan, summed in the composed backward's order.
    pub(super) fn cost_gradient_in_place(
        plan: &mut [f32],
        grad: &[f32],
        width: usize,
        w: &[f32],
        v: &[f32],
        epsilon: f32,
    ) {
        let rows = plan.chunks_exact_mut(width).zip(grad.chunks_exact(width));
        for ((p_row, g_row), w) in rows.zip(w) {
            for ((p, g), v) in p_row.iter_mut().zip(g_row).zip(v) {
                *p = *p * ((w + v) - g) / epsilon;
            }
        }
    }
}
