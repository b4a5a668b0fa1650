//! Special functions for the A/B statistics, implemented from their published algorithms:
//!
//! - the standard normal distribution: [`norm_cdf`] Φ(x), its complement [`norm_sf`]
//!   1 − Φ(x) with full relative precision in the far tail (W. J. Cody's rational Chebyshev
//!   approximations of erf/erfc, Math. Comp. 23, 1969), and its quantile [`norm_quantile`]
//!   (M. J. Wichura, Algorithm AS 241 PPND16, Applied Statistics 37, 1988);
//! - [`ln_gamma`], ln Γ(x) for x > 0 (a ζ-series around 1 and 2, Stirling's series from 10);
//! - [`gamma_q`], the regularized upper incomplete gamma function Q(a, x), which is the
//!   chi-square survival function: P(χ²_k > c) = Q(k/2, c/2) (series or Lentz's continued
//!   fraction, with the prefactor xᵃe⁻ˣ/Γ(a) in log space so tails down to 1e-300 keep their
//!   relative precision).
//!
//! Every function is checked against mpmath at 50 digits by the vectors in
//! `vectors/frequentist.json` (see `scripts/stats/frequentist_vectors.py`). Outside its domain a
//! function returns NaN, as `f64::ln` does; the callers in [`super::frequentist`] validate
//! their inputs before calling, and never return NaN themselves.

/// 1/√π.
const FRAC_1_SQRT_PI: f64 = 0.5641895835477563;

/// Φ(x), the standard normal cumulative distribution function P(Z ≤ x).
///
/// Computed as `norm_sf(-x)`, so the lower tail (x ≪ 0) keeps full relative precision; the
/// result underflows to 0 below x ≈ −38.5 and is NaN for a NaN `x`.
pub fn norm_cdf(x: f64) -> f64 {
    norm_sf(-x)
}

/// 1 − Φ(x), the standard normal survival function P(Z > x).
///
/// Cody's approximation of erfc(t), t = x/√2, written as erfc(t) = e^(−t²)·R(t): R comes from
/// his rational approximations and e^(−x²/2) is evaluated from `x` itself with the exponent
/// split in an exact high part and a small low part, so the relative error stays near 1e-15
/// up to x ≈ 37.5, where the result leaves the normal f64 range (it underflows to 0 above
/// x ≈ 38.5). NaN for a NaN `x`.
pub fn norm_sf(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let t = x.abs() * std::f64::consts::FRAC_1_SQRT_2;
    if t <= 0.46875 {
        // Around zero: 1 − Φ(x) = (1 − erf(x/√2)) / 2, erf from the first approximation.
        let erf = if x < 0.0 { -erf_small(t) } else { erf_small(t) };
        return 0.5 * (1.0 - erf);
    }
    // Upper tail of |x|: exp(-x²/2) with x² = hi² + (x - hi)(x + hi), hi having 4
    // fractional bits so hi² is exact.
    let ax = x.abs();
    let upper = if ax > 40.0 {
        0.0
    } else {
        let hi = (ax * 16.0).trunc() / 16.0;
        let lo = (ax - hi) * (ax + hi);
        0.5 * (-0.5 * hi * hi).exp() * (-0.5 * lo).exp() * erfc_scaled(t)
    };
    if x > 0.0 {
        upper
    } else {
        1.0 - upper
    }
}

/// erf(t) for 0 ≤ t ≤ 0.46875 (Cody 1969, first interval).
fn erf_small(t: f64) -> f64 {
    const A: [f64; 5] = [
        3.1611237438705655,
        113.86415415105016,
        377.485237685302,
        3209.3775891384694,
        0.18577770618460315,
    ];
    const B: [f64; 4] = [
        23.601290952344122,
        244.02463793444417,
        1282.6165260773723,
        2844.236833439171,
    ];
    let z = t * t;
    let mut num = A[4] * z;
    let mut den = z;
    for (a, b) in A.iter().zip(B.iter()).take(3) {
        num = (num + a) * z;
        den = (den + b) * z;
    }
    t * (num + A[3]) / (den + B[3])
}

/// R(t) = e^(t²)·erfc(t) for t > 0.46875 (Cody 1969, second and third intervals).
fn erfc_scaled(t: f64) -> f64 {
    if t <= 4.0 {
        const C: [f64; 9] = [
            0.5641884969886701,
            8.883149794388377,
            66.11919063714163,
            298.6351381974001,
            881.952221241769,
            1712.0476126340707,
            2051.0783778260716,
            1230.3393547979972,
            2.1531153547440383e-08,
        ];
        const D: [f64; 8] = [
            15.744926110709835,
            117.6939508913125,
            537.1811018620099,
            1621.3895745666903,
            3290.7992357334597,
            4362.619090143247,
            3439.3676741437216,
            1230.3393548037495,
        ];
        let mut num = C[8] * t;
        let mut den = t;
        for (c, d) in C.iter().zip(D.iter()).take(7) {
            num = (num + c) * t;
            den = (den + d) * t;
        }
        (num + C[7]) / (den + D[7])
    } else {
        const P: [f64; 6] = [
            0.30532663496123236,
            0.36034489994980445,
            0.12578172611122926,
            0.016083785148742275,
            0.0006587491615298378,
            0.016315387137302097,
        ];
        const Q: [f64; 5] = [
            2.568520192289822,
            1.8729528499234604,
            0.5279051029514285,
            0.06051834131244132,
            0.0023352049762686918,
        ];
        let z = 1.0 / (t * t);
        let mut num = P[5] * z;
        let mut den = z;
        for (p, q) in P.iter().zip(Q.iter()).take(4) {
            num = (num + p) * z;
            den = (den + q) * z;
        }
        let r = z * (num + P[4]) / (den + Q[4]);
        (FRAC_1_SQRT_PI - r) / t
    }
}

/// Φ⁻¹(p), the standard normal quantile: the x with P(Z ≤ x) = p.
///
/// Wichura's AS 241 (PPND16), relative accuracy about 1e-16 over 1e-300 ≤ p ≤ 1 − 1e-16.
/// For p < 0.5 the lower tail is evaluated from `p` itself, so tiny probabilities keep their
/// precision; an upper quantile z₁₋ₐ is best computed as `-norm_quantile(a)`.
/// Returns −∞ for p = 0, +∞ for p = 1 and NaN outside [0, 1].
pub fn norm_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        let num = (((((((2509.0809287301227 * r + 33430.57558358813) * r + 67265.7709270087)
            * r
            + 45921.95393154987)
            * r
            + 13731.69376550946)
            * r
            + 1971.5909503065513)
            * r
            + 133.14166789178438)
            * r
            + 3.3871328727963665)
            * q;
        let den = ((((((5226.495278852854 * r + 28729.085735721943) * r + 39307.89580009271)
            * r
            + 21213.794301586597)
            * r
            + 5394.196021424751)
            * r
            + 687.1870074920579)
            * r
            + 42.31333070160091)
            * r
            + 1.0;
        return num / den;
    }
    // Tails: r = sqrt(-ln(min(p, 1 - p))); 1 - p is exact for p > 0.5.
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let mut r = (-tail.ln()).sqrt();
    let x = if r <= 5.0 {
        r -= 1.6;
        let num = ((((((0.0007745450142783414 * r + 0.022723844989269184) * r
            + 0.2417807251774506)
            * r
            + 1.2704582524523684)
            * r
            + 3.6478483247632045)
            * r
            + 5.769497221460691)
            * r
            + 4.630337846156546)
            * r
            + 1.4234371107496835;
        let den = ((((((1.0507500716444169e-09 * r + 0.0005475938084995345) * r
            + 0.015198666563616457)
            * r
            + 0.14810397642748008)
            * r
            + 0.6897673349851)
            * r
            + 1.6763848301838038)
            * r
            + 2.053191626637759)
            * r
            + 1.0;
        num / den
    } else {
        r -= 5.0;
        let num = ((((((2.0103343992922881e-07 * r + 2.7115555687434876e-05) * r
            + 0.0012426609473880784)
            * r
            + 0.026532189526576124)
            * r
            + 0.29656057182850487)
            * r
            + 1.7848265399172913)
            * r
            + 5.463784911164114)
            * r
            + 6.657904643501103;
        let den = ((((((2.0442631033899397e-15 * r + 1.421511758316446e-07) * r
            + 1.8463183175100548e-05)
            * r
            + 0.0007868691311456133)
            * r
            + 0.014875361290850615)
            * r
            + 0.1369298809227358)
            * r
            + 0.599832206555888)
            * r
            + 1.0;
        num / den
    };
    if q < 0.0 {
        -x
    } else {
        x
    }
}

/// ln Γ(x) for x > 0.
///
/// - x ≥ 10: Stirling's asymptotic series with nine Bernoulli terms (truncation error below
///   1e-18);
/// - x < 2.5: the Taylor series ln Γ(1 + z) = −ln(1 + z) + z(1 − γ) + Σₖ (−1)ᵏ(ζ(k) − 1)zᵏ/k
///   (Abramowitz & Stegun 6.1.33 rearranged so the coefficients decay like 2⁻ᵏ) around 1 and 2,
///   so the zeros at x = 1 and x = 2 keep their relative precision;
/// - 2.5 ≤ x < 10: Γ(x) = (x − 1)…(x − m)·Γ(x − m) down to [1.5, 2.5).
///
/// Relative error about 1e-15 everywhere. NaN for x ≤ 0 or NaN, +∞ for x = +∞.
pub fn ln_gamma(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return f64::NAN;
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    if x >= 10.0 {
        return stirling(x);
    }
    if x < 0.5 {
        // ln Γ(x) = ln Γ(1 + x) − ln x.
        return zeta_series(x) - x.ln_1p() - x.ln();
    }
    if x < 1.5 {
        return zeta_series(x - 1.0) - (x - 1.0).ln_1p();
    }
    // Down to y in [1.5, 2.5): x − m is exact, as is every factor's subtraction.
    let mut y = x;
    let mut product = 1.0;
    while y >= 2.5 {
        y -= 1.0;
        product *= y;
    }
    // ln Γ(2 + z) = ln Γ(1 + z) + ln(1 + z) = the series alone.
    zeta_series(y - 2.0) + product.ln()
}

/// z(1 − γ) + Σₖ₌₂..₂₈ (−1)ᵏ(ζ(k) − 1)zᵏ/k for |z| ≤ 1/2, truncation error below 1e-18·|z|.
fn zeta_series(z: f64) -> f64 {
    /// 1 − γ, γ Euler's constant.
    const ONE_MINUS_EULER: f64 = 0.42278433509846713;
    /// (−1)ᵏ(ζ(k) − 1)/k for k = 2..=28 (mpmath, 40 digits, rounded to f64).
    const COEFFICIENTS: [f64; 27] = [
        0.3224670334241132,
        -0.0673523010531981,
        0.020580808427784546,
        -0.007385551028673986,
        0.0028905103307415234,
        -0.001192753911703261,
        0.0005096695247430425,
        -0.00022315475845357939,
        9.945751278180853e-05,
        -4.492623673813314e-05,
        2.050721277567069e-05,
        -9.439488275268397e-06,
        4.374866789907488e-06,
        -2.039215753801366e-06,
        9.55141213040742e-07,
        -4.492469198764566e-07,
        2.1207184805554665e-07,
        -1.0043224823968099e-07,
        4.7698101693639804e-08,
        -2.2711094608943164e-08,
        1.0838659214896955e-08,
        -5.183475041970047e-09,
        2.4836745438024785e-09,
        -1.1921401405860912e-09,
        5.731367241678862e-10,
        -2.7595228851242334e-10,
        1.330476437424449e-10,
    ];
    let tail = COEFFICIENTS.iter().rev().fold(0.0, |acc, c| acc * z + c);
    z * (ONE_MINUS_EULER + z * tail)
}

/// Stirling's series for ln Γ(x), x ≥ 10.
fn stirling(x: f64) -> f64 {
    // B_{2k} / (2k (2k - 1)) for k = 1..=9.
    const C: [f64; 9] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360360.0,
        1.0 / 156.0,
        -3617.0 / 122400.0,
        43867.0 / 244188.0,
    ];
    /// ln(2π)/2.
    const HALF_LN_2PI: f64 = 0.9189385332046727;
    let inv = 1.0 / x;
    let inv2 = inv * inv;
    let series = C.iter().rev().fold(0.0, |acc, c| acc * inv2 + c) * inv;
    (x - 0.5) * x.ln() - x + HALF_LN_2PI + series
}

/// Q(a, x) = Γ(a, x)/Γ(a), the regularized upper incomplete gamma function, a > 0, x ≥ 0.
///
/// The chi-square survival function is `gamma_q(df / 2, chi2 / 2)`. For x < a + 1 the series
/// of P(a, x) is summed and Q = 1 − P (Q is not small there); otherwise Q comes from its
/// continued fraction, evaluated with the modified Lentz algorithm. The prefactor
/// xᵃe⁻ˣ/Γ(a) is computed as exp(a ln x − x − ln Γ(a)), so tails keep their relative
/// precision until they leave the f64 range (below about 1e-308 they become subnormal or 0).
/// The iteration count grows like √a, not with x. NaN for a ≤ 0, x < 0 or NaN arguments.
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if a.is_nan() || x.is_nan() || a <= 0.0 || x < 0.0 || a.is_infinite() {
        return f64::NAN;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    let ln_prefactor = a * x.ln() - x - ln_gamma(a);
    if x < a + 1.0 {
        1.0 - lower_series(a, x, ln_prefactor)
    } else {
        upper_fraction(a, x, ln_prefactor)
    }
}

/// Most iterations the series or the continued fraction may take; enough for a up to
/// about 1e6, far more than any chi-square test with a handful of arms needs.
const MAX_ITERATIONS: usize = 100_000;

/// P(a, x) = xᵃe⁻ˣ/Γ(a + 1) · Σₙ xⁿ/((a+1)…(a+n)), for x < a + 1.
fn lower_series(a: f64, x: f64, ln_prefactor: f64) -> f64 {
    let mut term = 1.0 / a;
    let mut sum = term;
    let mut denominator = a;
    for _ in 0..MAX_ITERATIONS {
        denominator += 1.0;
        term *= x / denominator;
        sum += term;
        if term.abs() < sum.abs() * f64::EPSILON * 0.5 {
            break;
        }
    }
    (sum * ln_prefactor.exp()).min(1.0)
}

/// Q(a, x) = xᵃe⁻ˣ/Γ(a) · 1/(x + 1 − a − 1·(1 − a)/(x + 3 − a − 2·(2 − a)/(x + 5 − a − …))),
/// for x ≥ a + 1, by the modified Lentz algorithm.
fn upper_fraction(a: f64, x: f64, ln_prefactor: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / TINY;
    let mut d = 1.0 / b;
    let mut h = d;
    let mut i = 0.0;
    for _ in 0..MAX_ITERATIONS {
        i += 1.0;
        let an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < TINY {
            d = TINY;
        }
        c = b + an / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < f64::EPSILON {
            break;
        }
    }
    (ln_prefactor.exp() * h).clamp(0.0, 1.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::Value;

    /// The shipped vectors (mpmath, 50 digits).
    pub(crate) fn vectors() -> Value {
        serde_json::from_str(include_str!("vectors/frequentist.json"))
            .expect("the shipped vectors are valid JSON")
    }

    /// The largest absolute and relative errors seen for one function, and where.
    #[derive(Default)]
    pub(crate) struct Worst {
        pub abs: f64,
        pub abs_at: String,
        pub rel: f64,
        pub rel_at: String,
        pub checked: usize,
        pub failures: Vec<String>,
    }

    impl Worst {
        /// Compares `actual` with `expected` under the tolerance: 1e-9 absolute (1e-9
        /// relative beyond magnitude 1), and 1e-6 relative for `probability` values between
        /// 1e-300 and 1e-6; a probability below 1e-300 may be given as anything below 1e-299.
        pub fn check(&mut self, what: &str, actual: f64, expected: f64, probability: bool) {
            if !self.record(what, actual, expected, probability) {
                self.failures
                    .push(format!("{what}: got {actual:e}, expected {expected:e}"));
            }
        }

        /// Counts the value in the maxima and says whether it is within tolerance, without
        /// failing on it.
        pub fn record(
            &mut self,
            what: &str,
            actual: f64,
            expected: f64,
            probability: bool,
        ) -> bool {
            self.checked += 1;
            let abs = (actual - expected).abs();
            // A relative error is only meaningful against a non-zero value.
            let rel = if expected == 0.0 {
                0.0
            } else {
                abs / expected.abs()
            };
            let tiny = probability && expected.abs() < 1e-300;
            if abs > self.abs || abs.is_nan() {
                self.abs = abs;
                self.abs_at = what.to_string();
            }
            // Relative errors are reported for probabilities down to 1e-300 and for other
            // values from 1e-9 up: below that only the absolute error is meaningful.
            let relevant = if probability {
                !tiny
            } else {
                expected.abs() >= 1e-9
            };
            if relevant && (rel > self.rel || rel.is_nan()) {
                self.rel = rel;
                self.rel_at = what.to_string();
            }
            if !actual.is_finite() {
                false
            } else if tiny {
                actual.abs() < 1e-299
            } else {
                let abs_ok = abs <= 1e-9 * expected.abs().max(1.0);
                let rel_ok = !probability || expected.abs() >= 1e-6 || rel <= 1e-6;
                abs_ok && rel_ok
            }
        }

        /// Prints the summary line and fails the test on any value out of tolerance.
        pub fn finish(self, name: &str) {
            println!(
                "{name}: {} values, max abs error {:e} ({}), max rel error {:e} ({})",
                self.checked, self.abs, self.abs_at, self.rel, self.rel_at
            );
            assert!(self.checked > 0, "{name}: no vectors");
            assert!(
                self.failures.is_empty(),
                "{name}: {} values out of tolerance:\n{}",
                self.failures.len(),
                self.failures.join("\n")
            );
        }
    }

    /// A JSON number (or a decimal string) as f64.
    pub(crate) fn num(v: &Value) -> f64 {
        match v {
            Value::Number(n) => n.as_f64().expect("a JSON number is an f64"),
            Value::String(s) => s.parse().expect("a decimal string"),
            other => panic!("not a number: {other}"),
        }
    }

    fn rows<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("vectors have no {key}"))
    }

    #[test]
    fn normal_cdf_and_sf_match_the_vectors() {
        let v = vectors();
        let mut cdf = Worst::default();
        let mut sf = Worst::default();
        for row in rows(&v, "norm") {
            let x = num(&row[0]);
            cdf.check(&format!("x={x:e}"), norm_cdf(x), num(&row[1]), true);
            sf.check(&format!("x={x:e}"), norm_sf(x), num(&row[2]), true);
        }
        cdf.finish("norm_cdf");
        sf.finish("norm_sf");
    }

    #[test]
    fn normal_quantile_matches_the_vectors() {
        let v = vectors();
        let mut worst = Worst::default();
        for row in rows(&v, "norm_quantile") {
            let p = num(&row[0]);
            worst.check(&format!("p={p:e}"), norm_quantile(p), num(&row[1]), false);
        }
        worst.finish("norm_quantile");
    }

    #[test]
    fn ln_gamma_matches_the_vectors() {
        let v = vectors();
        let mut worst = Worst::default();
        for row in rows(&v, "ln_gamma") {
            let x = num(&row[0]);
            worst.check(&format!("x={x:e}"), ln_gamma(x), num(&row[1]), false);
        }
        worst.finish("ln_gamma");
    }

    #[test]
    fn gamma_q_matches_the_vectors() {
        let v = vectors();
        let mut worst = Worst::default();
        for row in rows(&v, "gamma_q") {
            let (a, x) = (num(&row[0]), num(&row[1]));
            worst.check(
                &format!("a={a:e} x={x:e}"),
                gamma_q(a, x),
                num(&row[2]),
                true,
            );
        }
        worst.finish("gamma_q");
    }

    #[test]
    fn arguments_outside_the_domains_give_nan_or_the_limits() {
        assert!(norm_sf(f64::NAN).is_nan());
        assert_eq!(norm_sf(f64::INFINITY), 0.0);
        assert_eq!(norm_sf(f64::NEG_INFINITY), 1.0);
        assert_eq!(norm_cdf(f64::NEG_INFINITY), 0.0);
        assert_eq!(norm_sf(0.0), 0.5);
        assert!(norm_quantile(-0.1).is_nan());
        assert!(norm_quantile(1.5).is_nan());
        assert!(norm_quantile(f64::NAN).is_nan());
        assert_eq!(norm_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(norm_quantile(1.0), f64::INFINITY);
        assert_eq!(norm_quantile(0.5), 0.0);
        assert!(ln_gamma(0.0).is_nan());
        assert!(ln_gamma(-1.0).is_nan());
        assert!(ln_gamma(1.0).abs() < 1e-15);
        assert!(gamma_q(0.0, 1.0).is_nan());
        assert!(gamma_q(1.0, -1.0).is_nan());
        assert_eq!(gamma_q(2.0, 0.0), 1.0);
        assert_eq!(gamma_q(2.0, f64::INFINITY), 0.0);
        // Q(1, x) = e^-x exactly.
        assert!((gamma_q(1.0, 3.0) - (-3.0f64).exp()).abs() < 1e-16);
    }
}
