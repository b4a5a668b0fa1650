//! Beta distributions, evaluated in log space without catastrophic cancellation.
//!
//! The posterior of a Bernoulli arm with `c` conversions out of `n` visitors under a uniform
//! prior is Beta(1 + c, 1 + n − c). At 10⁸ visitors ln B(a, b) is about −7·10⁷, so the naive
//! `(a − 1) ln x + (b − 1) ln(1 − x) − ln B(a, b)` loses eight of sixteen digits to
//! cancellation. This module follows Catherine Loader, "Fast and Accurate Computation of
//! Binomial Probabilities" (2000): every density is written as a saddle-point term
//! `√(ab / 2πN) · exp(δ(N) − δ(a) − δ(b) − bd0(a, N x) − bd0(b, N(1 − x)))` with N = a + b,
//! where δ is the Stirling error ([`stirling_error`]) and bd0 the deviance term ([`bd0`]),
//! both computed to full relative precision. Implemented from the paper, not from any code.
//!
//! The Bayesian integrals ([`super::bayes`]) work on the logit scale u = ln(x / (1 − x)),
//! where the density of a Beta(a, b) variable is `x^a (1 − x)^b / B(a, b)`: finite and smooth
//! everywhere (no boundary singularity when c = 0 or c = n), log-concave for all a, b > 0,
//! with ln-slope `a(1 − x) − b x` and ln-curvature `−N x (1 − x)`. That density is exactly
//! `(ab/N) · binom(a; N, x)`, hence the form above.

use std::f64::consts::PI;

/// ½ ln(2π).
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// A Beta(a, b) distribution with finite a, b > 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Beta {
    a: f64,
    b: f64,
    /// a + b.
    n: f64,
    /// ln of the logit-scale density at its mode x = a / N (where both deviances vanish).
    ln_peak: f64,
}

impl Beta {
    /// Beta(a, b); `None` unless both parameters are finite and positive.
    pub fn new(a: f64, b: f64) -> Option<Beta> {
        if !(a.is_finite() && b.is_finite() && a > 0.0 && b > 0.0) {
            return None;
        }
        let n = a + b;
        if !n.is_finite() {
            return None;
        }
        let ln_peak = 0.5 * (a.ln() + b.ln() - n.ln()) - HALF_LN_2PI + stirling_error(n)
            - stirling_error(a)
            - stirling_error(b);
        Some(Beta { a, b, n, ln_peak })
    }

    /// The posterior Beta(1 + c, 1 + n − c) of `conversions` (c) out of `visitors` (n) under a
    /// uniform prior; `None` when c > n. Counts above 2⁵³ are rounded to the nearest `f64`.
    pub fn posterior(conversions: u64, visitors: u64) -> Option<Beta> {
        let failures = visitors.checked_sub(conversions)?;
        // u64 → f64 is exact up to 2^53 and rounds beyond; the +1 cannot overflow an f64.
        Beta::new(conversions as f64 + 1.0, failures as f64 + 1.0)
    }

    /// The first shape parameter.
    pub fn a(&self) -> f64 {
        self.a
    }

    /// The second shape parameter.
    pub fn b(&self) -> f64 {
        self.b
    }

    /// The mean a / (a + b).
    pub fn mean(&self) -> f64 {
        self.a / self.n
    }

    /// The standard deviation √(ab / ((a + b)² (a + b + 1))).
    pub fn sd(&self) -> f64 {
        let (ma, mb) = (self.a / self.n, self.b / self.n);
        (ma * mb / (self.n + 1.0)).sqrt()
    }

    /// ln of the density at x: −∞ outside [0, 1], the limit at the end points (+∞ when the
    /// density is unbounded there), NaN for a NaN x.
    pub fn ln_pdf(&self, x: f64) -> f64 {
        if x.is_nan() {
            return f64::NAN;
        }
        if !(0.0..=1.0).contains(&x) {
            return f64::NEG_INFINITY;
        }
        if x == 0.0 || x == 1.0 {
            // At x = 0 the density behaves like x^(a−1) / B(a, b); with a = 1 it is b.
            let (near, far) = if x == 0.0 {
                (self.a, self.b)
            } else {
                (self.b, self.a)
            };
            return if near < 1.0 {
                f64::INFINITY
            } else if near > 1.0 {
                f64::NEG_INFINITY
            } else {
                // 1 / B(1, far) = far.
                far.ln()
            };
        }
        let y = 1.0 - x;
        self.ln_pdf_logit_xy(x, y) - x.ln() - y.ln()
    }

    /// The density at x (see [`Beta::ln_pdf`]).
    pub fn pdf(&self, x: f64) -> f64 {
        self.ln_pdf(x).exp()
    }

    /// The mode of the logit-scale density, ln(a / b).
    pub fn logit_mode(&self) -> f64 {
        (self.a / self.b).ln()
    }

    /// ln of the logit-scale density (the density of ln(X / (1 − X))) at u.
    pub fn ln_pdf_logit(&self, u: f64) -> f64 {
        let (x, y) = logistic(u);
        self.ln_pdf_logit_xy(x, y)
    }

    /// ln of the logit-scale density at the point with x = σ(u) and y = 1 − x, both given to
    /// full relative precision. −∞ when x or y underflowed to 0.
    pub fn ln_pdf_logit_xy(&self, x: f64, y: f64) -> f64 {
        self.ln_peak - bd0(self.a, self.n * x) - bd0(self.b, self.n * y)
    }

    /// The maximum of [`Beta::ln_pdf_logit`], reached at [`Beta::logit_mode`].
    pub fn ln_pdf_logit_peak(&self) -> f64 {
        self.ln_peak
    }

    /// d/du of [`Beta::ln_pdf_logit`] at x = σ(u), y = 1 − x: a·y − b·x.
    pub fn logit_slope(&self, x: f64, y: f64) -> f64 {
        self.a * y - self.b * x
    }

    /// −d²/du² of [`Beta::ln_pdf_logit`] at x = σ(u), y = 1 − x: N·x·y (always ≥ 0).
    pub fn logit_curvature(&self, x: f64, y: f64) -> f64 {
        self.n * x * y
    }
}

/// The logistic σ(u) = 1 / (1 + e^(−u)) and 1 − σ(u), each to full relative precision.
pub fn logistic(u: f64) -> (f64, f64) {
    if u <= 0.0 {
        let e = u.exp();
        let d = 1.0 + e;
        (e / d, 1.0 / d)
    } else {
        let e = (-u).exp();
        let d = 1.0 + e;
        (1.0 / d, e / d)
    }
}

/// Loader's Stirling error δ(z) = ln Γ(z + 1) − (z + ½) ln z + z − ½ ln 2π for z > 0, to
/// about 1e-16 absolute: the asymptotic series from z ≥ 15 and below that the exact
/// recurrence δ(z) = δ(z + 1) + (z + ½) ln(1 + 1/z) − 1.
pub fn stirling_error(z: f64) -> f64 {
    if z.is_nan() || z <= 0.0 {
        return f64::NAN;
    }
    let mut z = z;
    let mut acc = 0.0;
    while z < 15.0 {
        acc += (z + 0.5) * (1.0 / z).ln_1p() - 1.0;
        z += 1.0;
    }
    // Bernoulli-number series: 1/12z − 1/360z³ + 1/1260z⁵ − 1/1680z⁷ + 1/1188z⁹
    // − 691/360360z¹¹ + 1/156z¹³; at z = 15 the first omitted term is below 1e-18.
    let r = 1.0 / z;
    let r2 = r * r;
    let series = r
        * (1.0 / 12.0
            - r2 * (1.0 / 360.0
                - r2 * (1.0 / 1260.0
                    - r2 * (1.0 / 1680.0
                        - r2 * (1.0 / 1188.0 - r2 * (691.0 / 360_360.0 - r2 / 156.0))))));
    acc + series
}

/// Loader's deviance term bd0(x, m) = x ln(x / m) + m − x ≥ 0 for x > 0, m ≥ 0, to full
/// relative precision: near x = m by the series in v = (x − m)/(x + m),
/// bd0 = (x − m) v + 2x (v³/3 + v⁵/5 + …), which never subtracts nearly equal terms.
pub fn bd0(x: f64, m: f64) -> f64 {
    if m == 0.0 {
        return f64::INFINITY;
    }
    if !(m.is_finite()) {
        return f64::INFINITY;
    }
    let diff = x - m;
    if diff.abs() < 0.1 * (x + m) {
        let v = diff / (x + m);
        let v2 = v * v;
        let mut sum = diff * v;
        let mut ej = 2.0 * x * v;
        let mut j = 1.0;
        // Converges at least like 0.01^j; 40 terms are far more than ever needed.
        for _ in 0..40 {
            ej *= v2;
            j += 2.0;
            let next = sum + ej / j;
            if next == sum {
                break;
            }
            sum = next;
        }
        sum
    } else {
        x * (x / m).ln() + m - x
    }
}

/// The Gauss–Legendre rule used by [`super::bayes`] on every panel, with its spectral
/// integration matrix: `nodes` and `weights` on [−1, 1], and `cumulative[i][j]` such that
/// Σⱼ cumulative[i][j]·f(tⱼ) = ∫₋₁^{tᵢ} p(t) dt for the polynomial p of degree < M through
/// the nodes (exact for such polynomials).
#[derive(Debug)]
pub(crate) struct Rule {
    pub nodes: [f64; RULE_POINTS],
    pub weights: [f64; RULE_POINTS],
    pub cumulative: [[f64; RULE_POINTS]; RULE_POINTS],
}

/// Points per panel of the quadrature rule.
pub(crate) const RULE_POINTS: usize = 20;

/// Legendre polynomials P₀..=P_{RULE_POINTS} at t.
fn legendre_all(t: f64) -> [f64; RULE_POINTS + 1] {
    let mut p = [0.0; RULE_POINTS + 1];
    p[0] = 1.0;
    p[1] = t;
    for k in 1..RULE_POINTS {
        let kf = k as f64;
        p[k + 1] = ((2.0 * kf + 1.0) * t * p[k] - kf * p[k - 1]) / (kf + 1.0);
    }
    p
}

impl Rule {
    /// Computes the rule: nodes by Newton's method on P_M, weights 2 / ((1 − t²) P_M'(t)²),
    /// the matrix from the Legendre expansion of each Lagrange basis polynomial,
    /// ℓⱼ = Σₖ (k + ½) wⱼ Pₖ(tⱼ) Pₖ, and ∫₋₁^t Pₖ = (Pₖ₊₁(t) − Pₖ₋₁(t)) / (2k + 1).
    fn compute() -> Rule {
        let m = RULE_POINTS;
        let mf = m as f64;
        let mut nodes = [0.0; RULE_POINTS];
        let mut weights = [0.0; RULE_POINTS];
        for (i, (node, weight)) in nodes.iter_mut().zip(weights.iter_mut()).enumerate() {
            // Ascending order: the i-th root from the left.
            let mut t = -(PI * (i as f64 + 0.75) / (mf + 0.5)).cos();
            for _ in 0..100 {
                let p = legendre_all(t);
                let pm = p[m];
                let pm1 = p[m - 1];
                let dp = mf * (t * pm - pm1) / (t * t - 1.0);
                let step = pm / dp;
                t -= step;
                if step.abs() < 1e-17 {
                    break;
                }
            }
            let p = legendre_all(t);
            let dp = mf * (t * p[m] - p[m - 1]) / (t * t - 1.0);
            *node = t;
            *weight = 2.0 / ((1.0 - t * t) * dp * dp);
        }
        let mut cumulative = [[0.0; RULE_POINTS]; RULE_POINTS];
        let at_nodes: Vec<[f64; RULE_POINTS + 1]> =
            nodes.iter().map(|&t| legendre_all(t)).collect();
        for (row, pi) in cumulative.iter_mut().zip(at_nodes.iter()) {
            let ti = pi[1];
            // ∫₋₁^{tᵢ} Pₖ.
            let mut q = [0.0; RULE_POINTS];
            q[0] = ti + 1.0;
            for (k, qk) in q.iter_mut().enumerate().skip(1) {
                *qk = (pi[k + 1] - pi[k - 1]) / (2.0 * k as f64 + 1.0);
            }
            for (cell, (pj, wj)) in row.iter_mut().zip(at_nodes.iter().zip(weights.iter())) {
                let s: f64 = (0..m).map(|k| (k as f64 + 0.5) * pj[k] * q[k]).sum();
                *cell = wj * s;
            }
        }
        Rule {
            nodes,
            weights,
            cumulative,
        }
    }

    /// The rule, computed once.
    pub fn get() -> &'static Rule {
        static RULE: std::sync::OnceLock<Rule> = std::sync::OnceLock::new();
        RULE.get_or_init(Rule::compute)
    }
}
