//! The fused solver's loops over `f32` rows: primitives (dot products, `y += αx`, maxima,
//! `exp`) written as plain loops over fixed-width chunks so that the compiler vectorizes
//! them, and the kernels built from them, each compiled for the CPU's vector instructions
//! and chosen at run time ([`dispatched!`]).

/// Independent accumulators per loop: one AVX-512 register or two AVX2 ones, so that the sums
/// are not one long dependency chain.
pub(super) const LANES: usize = 16;

/// Defines a function whose body is compiled three times on x86-64 (AVX-512, AVX2 + FMA, and
/// the baseline) and runs the best one this CPU has (the standard library's cached feature
/// detection). Everything the body calls must be `#[inline(always)]` so that it is compiled
/// inside each copy; the primitives below are. Elsewhere the one portable copy is used
/// (aarch64's NEON is baseline).
macro_rules! dispatched {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) $(-> $ret)? { portable($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? { portable($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: this CPU has every feature `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: this CPU has every feature `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
pub(super) use dispatched;

/// `Σ_k a_k b_k`.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `y += alpha x`.
#[inline(always)]
pub(super) fn add_scaled(y: &mut [f32], alpha: f32, x: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// `max_k v_k` (`-inf` for an empty slice; NaN entries are skipped, as `f32::max` does).
#[inline(always)]
pub(super) fn max(v: &[f32]) -> f32 {
    let (chunks, tail) = v.as_chunks::<LANES>();
    let mut acc = [f32::NEG_INFINITY; LANES];
    for x in chunks {
        for k in 0..LANES {
            acc[k] = acc[k].max(x[k]);
        }
    }
    let tail = tail.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
    acc.iter().fold(tail, |m, x| m.max(*x))
}

/// `log Σ_k exp(a_k + b_k)`, shifted by the largest term so that nothing overflows and the
/// dominant term is 1.
#[inline(always)]
pub(super) fn log_sum_exp_of_sum(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (a_chunks, a_tail) = a.as_chunks::<LANES>();
    let (b_chunks, b_tail) = b.as_chunks::<LANES>();
    let mut top = [f32::NEG_INFINITY; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for k in 0..LANES {
            top[k] = top[k].max(x[k] + y[k]);
        }
    }
    let top = a_tail.iter().zip(b_tail).fold(
        top.iter().fold(f32::NEG_INFINITY, |m, t| m.max(*t)),
        |m, (x, y)| m.max(x + y),
    );
    let mut acc = [0.0f32; LANES];
    for (x, y) in a_chunks.iter().zip(b_chunks) {
        for k in 0..LANES {
            acc[k] += exp(x[k] + y[k] - top);
        }
    }
    let tail: f32 = a_tail
        .iter()
        .zip(b_tail)
        .map(|(x, y)| exp(x + y - top))
        .sum();
    (acc.iter().sum::<f32>() + tail).ln() + top
}

/// `exp(x)` for `f32`, branch-free so that it vectorizes: `x = k ln 2 + r` with `|r| <= ln 2 / 2`,
/// `exp(r)` by Cephes' `expf` polynomial (relative error below 2 ulp), `2^k` by building
/// the exponent bits. Underflows to exactly 0 below `ln(f32::MIN_POSITIVE)` (no subnormals)
/// and overflows to infinity above `ln(f32::MAX)`; NaN stays NaN.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const LOWEST: f32 = -87.336_55; // ln(f32::MIN_POSITIVE)
    const HIGHEST: f32 = 88.722_83; // ln(f32::MAX)
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let clamped = x.clamp(LOWEST, HIGHEST);
    let k = (clamped * std::f32::consts::LOG2_E).round_ties_even();
    let r = clamped - k * LN2_HIGH - k * LN2_LOW;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let exp_r = p * r * r + r + 1.0;
    // k is in [-126, 128] and 2^128 is not a float: scale by two halves of 2^k, each built
    // by the float-addition trick (integer casts do not vectorize on x86).
    let half = (k * 0.5).floor();
    let scale_a = power_of_two(half);
    let scale_b = power_of_two(k - half);
    let value = exp_r * scale_a * scale_b;
    let value = if x < LOWEST { 0.0 } else { value };
    if x > HIGHEST {
        f32::INFINITY
    } else {
        value
    }
}

/// `ln(x)` for `f32`, branch-free so that it vectorizes: `x = 2^e m` with `m` in
/// `[√½, √2)`, `ln(m)` by Cephes' `logf` polynomial (relative error below 2 ulp). Exact at
/// the special values: `ln 0 = -inf`, `ln inf = inf`, NaN for negative inputs and NaN;
/// subnormal inputs are scaled up first.
#[inline(always)]
pub(super) fn ln(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    // Subnormals have no implicit leading bit: scale them by 2^25 first.
    let subnormal = x < f32::MIN_POSITIVE;
    let scaled = if subnormal { x * 33_554_432.0 } else { x };
    let bits = scaled.to_bits();
    // The mantissa as a float in [0.5, 1), and the matching exponent.
    let exponent = ((bits >> 23) & 0xff) as i32 - 126 - if subnormal { 25 } else { 0 };
    let mantissa = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let low = mantissa < SQRT_HALF;
    let e = (exponent - i32::from(low)) as f32;
    let f = if low {
        mantissa + mantissa - 1.0
    } else {
        mantissa - 1.0
    };
    let z = f * f;
    let mut y = 7.037_683_6e-2f32;
    y = y * f - 1.151_461e-1;
    y = y * f + 1.167_699_9e-1;
    y = y * f - 1.242_014_1e-1;
    y = y * f + 1.424_932_3e-1;
    y = y * f - 1.666_805_8e-1;
    y = y * f + 2.000_071_4e-1;
    y = y * f - 2.499_999_4e-1;
    y = y * f + 3.333_333e-1;
    y = y * f * z;
    y += -2.121_944_4e-4 * e;
    y += -0.5 * z;
    let value = f + y + 0.693_359_4 * e;
    // Special values, as selects.
    let value = if x == f32::INFINITY { x } else { value };
    let value = if x == 0.0 { f32::NEG_INFINITY } else { value };
    if x < 0.0 || x.is_nan() {
        f32::NAN
    } else {
        value
    }
}

/// `2^k` for an integer-valued `k` in [-126, 127]: adding `2^23 + 127` puts `k + 127` in the
/// low mantissa bits, which a shift moves into the exponent field.
#[inline(always)]
fn power_of_two(k: f32) -> f32 {
    const OFFSET: f32 = 8_388_608.0 + 127.0; // 2^23 + the exponent bias
    f32::from_bits((k + OFFSET).to_bits() << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the standard library's `exp` (correctly rounded to within 1 ulp) over the
    /// whole range, including the ends where the scaling by `2^k` is split.
    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst: f32 = 0.0;
        let mut x = -87.3f32;
        while x < 88.7 {
            let (fast, exact) = (exp(x), (x as f64).exp() as f32);
            worst = worst.max(((fast - exact) / exact).abs());
            x += 0.001_3;
        }
        assert!(worst < 3.0 * f32::EPSILON, "relative error {worst}");
        assert_eq!(exp(-88.0), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    /// Against the standard library's `ln`, over normal and subnormal inputs and the special
    /// values.
    #[test]
    fn ln_matches_std_to_a_few_ulp() {
        let mut worst: f32 = 0.0;
        // Every 997th positive float, subnormals included.
        for bits in (1..0x7f80_0000u32).step_by(997) {
            let x = f32::from_bits(bits);
            let (fast, exact) = (ln(x), (x as f64).ln() as f32);
            let error = (fast - exact).abs() / exact.abs().max(1.0);
            worst = worst.max(error);
        }
        assert!(worst < 3.0 * f32::EPSILON, "error {worst}");
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(ln(0.0), f32::NEG_INFINITY);
        assert_eq!(ln(f32::INFINITY), f32::INFINITY);
        assert!(ln(-1.0).is_nan() && ln(f32::NAN).is_nan());
    }

    /// Sums over lengths that are and are not multiples of the chunk width.
    #[test]
    fn reductions_match_sequential_sums() {
        for len in [0, 1, 15, 16, 17, 100] {
            let a: Vec<f32> = (0..len).map(|k| (k as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|k| (k as f32 * 0.11).cos()).collect();
            let dot_exact: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
            assert!((dot(&a, &b) as f64 - dot_exact).abs() < 1e-5);
            let top = a.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
            assert_eq!(max(&a), top);
            if len > 0 {
                let lse_exact = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| ((x + y) as f64).exp())
                    .sum::<f64>()
                    .ln();
                assert!((log_sum_exp_of_sum(&a, &b) as f64 - lse_exact).abs() < 1e-5);
            }
        }
    }
}
