//! Frequentist A/B statistics on conversion counts.
//!
//! Conventions: A is the control, B a variant, and every difference is B − A. An interval at
//! confidence c uses the exact normal quantile z = Φ⁻¹(1 − (1 − c)/2) (1.959963984540054 at
//! 95 %, not 1.96), computed once by [`Confidence::new`].
//!
//! - [`wilson`]: the Wilson score interval of one arm's rate (no continuity correction);
//! - [`z_test`]: the pooled two-proportion z-test, two-sided, no continuity correction;
//! - [`diff_interval`]: the unpooled Wald interval of p̂_B − p̂_A;
//! - [`lift_interval`]: the relative lift p̂_B/p̂_A − 1 with its first-order delta-method
//!   interval;
//! - [`compare`]: all of the above for a control and a variant;
//! - [`sample_size`]: Fleiss's visitors per variant for a relative minimum detectable effect;
//! - [`srm`]: the sample-ratio-mismatch chi-square test of the arms' visitors against their
//!   intended weights.
//!
//! Inputs are validated into types ([`Arm`], [`Confidence`]) or refused with a
//! [`StatsError`]; an output that does not exist (the rate of an arm without visitors, the
//! z-test when nobody or everybody converted, the lift of a control without conversions) is
//! `None`. No function returns NaN or an infinity, and none panics, for any input.
//!
//! Accuracy (checked against `vectors/frequentist.json`, mpmath at 50 digits): within 1e-9
//! absolute (1e-9 relative for values beyond 1 in magnitude) and p-values below 1e-6 within
//! 1e-6 relative, for counts up to 10⁸ visitors per arm and beyond. Differences of rates are
//! formed from exact integer cross products (c_B·n_A − c_A·n_B in u128), so close rates do not
//! cancel; every function costs a fixed number of operations except [`srm`], whose
//! incomplete-gamma evaluation grows with the number of arms, not with the counts.

use super::special::{gamma_q, norm_quantile, norm_sf};

/// Why a statistic was refused: an input outside the domain of the method.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StatsError {
    /// An arm cannot convert more visitors than it has.
    #[error("an arm has {conversions} conversions for {visitors} visitors")]
    ConversionsExceedVisitors {
        /// The conversions given.
        conversions: u64,
        /// The visitors given.
        visitors: u64,
    },
    /// A confidence level must be a finite number strictly between 0 and 1.
    #[error("the confidence level must be strictly between 0 and 1, got {0}")]
    Confidence(f64),
    /// A power must be a finite number strictly between 0 and 1.
    #[error("the power must be strictly between 0 and 1, got {0}")]
    Power(f64),
    /// A baseline conversion rate must be a finite number strictly between 0 and 1.
    #[error("the baseline conversion rate must be strictly between 0 and 1, got {0}")]
    Baseline(f64),
    /// A relative minimum detectable effect must be finite and not 0.
    #[error("the relative minimum detectable effect must be finite and not 0, got {0}")]
    MinimumDetectableEffect(f64),
    /// The variant's rate p₁(1 + mde) must stay strictly between 0 and 1.
    #[error("the variant's rate baseline × (1 + mde) = {0} is not strictly between 0 and 1")]
    VariantRate(f64),
    /// A test needs at least two arms (variants, the control included).
    #[error("at least two arms are needed, got {0}")]
    TooFewArms(usize),
    /// The SRM test needs one weight per arm.
    #[error("{visitors} visitor counts but {weights} weights")]
    LengthMismatch {
        /// Number of visitor counts.
        visitors: usize,
        /// Number of weights.
        weights: usize,
    },
    /// A traffic weight must be finite and greater than 0, and not so much smaller than the
    /// largest one that their ratio underflows.
    #[error("weight {index} is {weight}: weights must be finite and greater than 0")]
    Weight {
        /// The position of the weight.
        index: usize,
        /// The weight given.
        weight: f64,
    },
    /// The answer does not fit in a u64 (a sample size for a tiny effect on a tiny rate).
    #[error("the result does not fit in 64 bits")]
    Overflow,
}

/// One arm's counts: `conversions` out of `visitors`, with conversions ≤ visitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Arm {
    conversions: u64,
    visitors: u64,
}

impl Arm {
    /// The counts of an arm; refused when there are more conversions than visitors.
    pub fn new(conversions: u64, visitors: u64) -> Result<Self, StatsError> {
        if conversions > visitors {
            return Err(StatsError::ConversionsExceedVisitors {
                conversions,
                visitors,
            });
        }
        Ok(Self {
            conversions,
            visitors,
        })
    }

    /// The conversions.
    pub fn conversions(self) -> u64 {
        self.conversions
    }

    /// The visitors.
    pub fn visitors(self) -> u64 {
        self.visitors
    }

    /// The conversion rate p̂ = conversions/visitors; `None` without visitors.
    pub fn rate(self) -> Option<f64> {
        self.rates().map(|(p, _)| p)
    }

    /// (p̂, 1 − p̂), the second from the exact count of non-converted visitors so that it
    /// keeps its relative precision when p̂ is close to 1.
    fn rates(self) -> Option<(f64, f64)> {
        if self.visitors == 0 {
            return None;
        }
        let n = self.visitors as f64;
        let failures = self.visitors - self.conversions;
        Some((self.conversions as f64 / n, failures as f64 / n))
    }
}

/// A confidence level c in (0, 1) with its two-sided normal quantile z₁₋₍₁₋c₎/₂.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Confidence {
    level: f64,
    z: f64,
}

impl Confidence {
    /// The confidence level `level` (0.95 for 95 %); refused unless finite and in (0, 1).
    pub fn new(level: f64) -> Result<Self, StatsError> {
        if !(level > 0.0 && level < 1.0) {
            return Err(StatsError::Confidence(level));
        }
        // z = -Φ⁻¹(α/2), from the lower tail: 1 - level is exact for level ≥ 0.5.
        let z = -norm_quantile((1.0 - level) / 2.0);
        if !z.is_finite() {
            return Err(StatsError::Confidence(level));
        }
        Ok(Self { level, z })
    }

    /// The level, as given.
    pub fn level(self) -> f64 {
        self.level
    }

    /// The two-sided normal quantile z₁₋₍₁₋c₎/₂ (1.959963984540054 for 0.95).
    pub fn z(self) -> f64 {
        self.z
    }
}

/// A closed interval [lower, upper].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The lower bound.
    pub lower: f64,
    /// The upper bound.
    pub upper: f64,
}

/// A point estimate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// The point estimate.
    pub value: f64,
    /// Its confidence interval.
    pub interval: Interval,
}

/// The pooled two-proportion z-test of B against A.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ZTest {
    /// z = (p̂_B − p̂_A)/√(p̄(1 − p̄)(1/n_A + 1/n_B)), p̄ the pooled rate; positive when B
    /// converts better.
    pub z: f64,
    /// The two-sided p-value 2(1 − Φ(|z|)), with full relative precision when tiny.
    pub p_value: f64,
}

/// Everything frequentist about a control and one variant, as [`compare`] computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// The control's rate and Wilson interval; `None` without visitors.
    pub control: Option<Estimate>,
    /// The variant's rate and Wilson interval; `None` without visitors.
    pub variant: Option<Estimate>,
    /// The pooled z-test; see [`z_test`].
    pub z_test: Option<ZTest>,
    /// p̂_B − p̂_A with its Wald interval; see [`diff_interval`].
    pub difference: Option<Estimate>,
    /// p̂_B/p̂_A − 1 with its delta-method interval; see [`lift_interval`].
    pub lift: Option<Estimate>,
}

/// Visitors needed per variant, and in total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleSize {
    /// Visitors in each arm.
    pub per_variant: u64,
    /// `per_variant` × the number of arms.
    pub total: u64,
}

/// The sample-ratio-mismatch test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Srm {
    /// Pearson's chi-square Σ (oᵢ − eᵢ)²/eᵢ, eᵢ = N·wᵢ/Σw; saturates at `f64::MAX` in the
    /// (absurd) case where it overflows.
    pub chi2: f64,
    /// Degrees of freedom, the number of arms − 1.
    pub df: u64,
    /// P(χ²_df > chi2); a p-value below about 1e-300 may be given as 0.
    pub p_value: f64,
}

/// The Wilson score interval of an arm's rate, without continuity correction:
/// (p̂ + z²/2n ∓ z√(p̂(1 − p̂)/n + z²/4n²)) / (1 + z²/n). `None` for an arm without visitors.
///
/// Evaluated as (2c + z² ∓ z√(z² + 4c(n − c)/n)) / (2(n + z²)), which keeps the relative
/// precision of a bound close to 0; no conversions give exactly 0 as the lower bound, all
/// converted exactly 1 as the upper bound.
pub fn wilson(arm: Arm, confidence: Confidence) -> Option<Estimate> {
    let (p, q) = arm.rates()?;
    let n = arm.visitors as f64;
    let c = arm.conversions as f64;
    let z = confidence.z;
    let z2 = z * z;
    let root = z * (z2 + 4.0 * c * q).sqrt();
    let denominator = 2.0 * (n + z2);
    let lower = if arm.conversions == 0 {
        0.0
    } else {
        ((2.0 * c + z2 - root) / denominator).clamp(0.0, 1.0)
    };
    let upper = if arm.conversions == arm.visitors {
        1.0
    } else {
        ((2.0 * c + z2 + root) / denominator).clamp(0.0, 1.0)
    };
    finite_estimate(p, lower, upper)
}

/// The pooled two-proportion z-test of `variant` against `control`, two-sided, without
/// continuity correction. `None` when an arm has no visitors or the pooled rate is 0 or 1
/// (nobody or everybody converted: the statistic is 0/0).
pub fn z_test(control: Arm, variant: Arm) -> Option<ZTest> {
    let diff = exact_difference(control, variant)?;
    let conversions = u128::from(control.conversions) + u128::from(variant.conversions);
    let visitors = u128::from(control.visitors) + u128::from(variant.visitors);
    if conversions == 0 || conversions == visitors {
        return None;
    }
    let n = visitors as f64;
    let pooled = conversions as f64 / n;
    let pooled_complement = (visitors - conversions) as f64 / n;
    // 1/n_A + 1/n_B = (n_A + n_B)/(n_A n_B).
    let product = u128::from(control.visitors) * u128::from(variant.visitors);
    let se = (pooled * pooled_complement * (n / product as f64)).sqrt();
    let z = diff / se;
    let p_value = (2.0 * norm_sf(z.abs())).min(1.0);
    (z.is_finite() && p_value.is_finite()).then_some(ZTest { z, p_value })
}

/// p̂_B − p̂_A with the unpooled Wald interval diff ∓ z√(p̂_A(1−p̂_A)/n_A + p̂_B(1−p̂_B)/n_B)
/// (not clamped to [−1, 1]). `None` when an arm has no visitors.
pub fn diff_interval(control: Arm, variant: Arm, confidence: Confidence) -> Option<Estimate> {
    let diff = exact_difference(control, variant)?;
    let (pa, qa) = control.rates()?;
    let (pb, qb) = variant.rates()?;
    let se = (pa * qa / control.visitors as f64 + pb * qb / variant.visitors as f64).sqrt();
    let half = confidence.z * se;
    finite_estimate(diff, diff - half, diff + half)
}

/// The relative lift p̂_B/p̂_A − 1 with the first-order delta-method interval
/// lift ∓ z√(p̂_B(1−p̂_B)/(n_B p̂_A²) + p̂_B² p̂_A(1−p̂_A)/(n_A p̂_A⁴)).
/// `None` when an arm has no visitors or the control has no conversions (p̂_A = 0).
pub fn lift_interval(control: Arm, variant: Arm, confidence: Confidence) -> Option<Estimate> {
    if control.conversions == 0 {
        return None;
    }
    let (pa, qa) = control.rates()?;
    let (pb, qb) = variant.rates()?;
    // (c_B n_A − c_A n_B)/(c_A n_B), exact numerator.
    let (sign, numerator) = cross_difference(control, variant);
    let denominator = u128::from(control.conversions) * u128::from(variant.visitors);
    let lift = sign * (numerator as f64 / denominator as f64);
    let ratio = pb / pa;
    let variance = (pb * qb / variant.visitors as f64
        + ratio * ratio * pa * qa / control.visitors as f64)
        / (pa * pa);
    let half = confidence.z * variance.sqrt();
    finite_estimate(lift, lift - half, lift + half)
}

/// The rates, Wilson intervals, z-test, difference and lift of `variant` against `control`.
pub fn compare(control: Arm, variant: Arm, confidence: Confidence) -> Comparison {
    Comparison {
        control: wilson(control, confidence),
        variant: wilson(variant, confidence),
        z_test: z_test(control, variant),
        difference: diff_interval(control, variant, confidence),
        lift: lift_interval(control, variant, confidence),
    }
}

/// Visitors per variant to detect a relative change `relative_mde` of the `baseline` rate
/// with the given `power` in a two-sided test at `confidence`: Fleiss's formula without
/// continuity correction,
///
/// n = (z₁₋α/₂ √(2p̄(1−p̄)) + z₁₋β √(p₁(1−p₁) + p₂(1−p₂)))² / (p₂ − p₁)²,
///
/// p₁ = baseline, p₂ = p₁(1 + mde), p̄ = (p₁ + p₂)/2, α = 1 − confidence, β = 1 − power,
/// rounded up (at least 1). `total` is `per_variant × variants`, `variants` counting every
/// arm, the control included (2 for a plain A/B test); no multiple-comparison correction is
/// applied for more arms. A negative `relative_mde` (a drop) is allowed as long as p₂ > 0.
///
/// Refused: baseline outside (0, 1), power outside (0, 1), mde 0 or non-finite, p₂ ≥ 1 or
/// p₂ ≤ 0, fewer than 2 variants, and an answer beyond u64.
pub fn sample_size(
    baseline: f64,
    relative_mde: f64,
    power: f64,
    confidence: Confidence,
    variants: u32,
) -> Result<SampleSize, StatsError> {
    if !(baseline > 0.0 && baseline < 1.0) {
        return Err(StatsError::Baseline(baseline));
    }
    if !relative_mde.is_finite() || relative_mde == 0.0 {
        return Err(StatsError::MinimumDetectableEffect(relative_mde));
    }
    if !(power > 0.0 && power < 1.0) {
        return Err(StatsError::Power(power));
    }
    if variants < 2 {
        return Err(StatsError::TooFewArms(variants as usize));
    }
    let p1 = baseline;
    let delta = p1 * relative_mde;
    let p2 = p1 + delta;
    if !(p2 > 0.0 && p2 < 1.0) || delta == 0.0 {
        return Err(StatsError::VariantRate(p2));
    }
    // Complements from 1 - p1 (exact for p1 ≥ 0.5) so rates near 1 keep their precision.
    let q1 = 1.0 - p1;
    let q2 = q1 - delta;
    let mean = p1 + delta / 2.0;
    let mean_complement = q1 - delta / 2.0;
    let z_alpha = confidence.z;
    let z_beta = -norm_quantile(1.0 - power);
    let root =
        z_alpha * (2.0 * mean * mean_complement).sqrt() + z_beta * (p1 * q1 + p2 * q2).sqrt();
    let n = (root / delta) * (root / delta);
    // 2^64 is exact in f64; anything at or above it does not fit.
    const LIMIT: f64 = 18_446_744_073_709_551_616.0;
    if !n.is_finite() || n.ceil() >= LIMIT {
        return Err(StatsError::Overflow);
    }
    let per_variant = (n.ceil() as u64).max(1);
    let total = per_variant
        .checked_mul(u64::from(variants))
        .ok_or(StatsError::Overflow)?;
    Ok(SampleSize { per_variant, total })
}

/// The sample-ratio-mismatch test: Pearson's chi-square of the arms' `visitors` against
/// the expected counts eᵢ = N·wᵢ/Σw (N the total visitors, `weights` normalised here, so
/// `[1, 1]` and `[0.5, 0.5]` are the same split), df = k − 1, p-value = Q(df/2, chi2/2).
/// With no visitors at all the arms match trivially: chi2 = 0, p-value = 1.
///
/// Refused: fewer than 2 arms, a weight count different from the visitor count, a weight
/// that is not finite and > 0 (or so small against the largest that their ratio underflows).
pub fn srm(visitors: &[u64], weights: &[f64]) -> Result<Srm, StatsError> {
    if visitors.len() != weights.len() {
        return Err(StatsError::LengthMismatch {
            visitors: visitors.len(),
            weights: weights.len(),
        });
    }
    if visitors.len() < 2 {
        return Err(StatsError::TooFewArms(visitors.len()));
    }
    let mut largest = 0.0_f64;
    for (index, &weight) in weights.iter().enumerate() {
        if !(weight > 0.0 && weight.is_finite()) {
            return Err(StatsError::Weight { index, weight });
        }
        largest = largest.max(weight);
    }
    // Scaled by the largest weight the sum cannot overflow; a ratio that is not a normal
    // number would make an expected count 0 or imprecise.
    let mut weight_sum = 0.0;
    for (index, &weight) in weights.iter().enumerate() {
        let scaled = weight / largest;
        if scaled < f64::MIN_POSITIVE {
            return Err(StatsError::Weight { index, weight });
        }
        weight_sum += scaled;
    }
    let df = visitors.len() as u64 - 1;
    let total = visitors.iter().try_fold(0_u128, |sum, &v| {
        sum.checked_add(u128::from(v)).ok_or(StatsError::Overflow)
    })?;
    if total == 0 {
        return Ok(Srm {
            chi2: 0.0,
            df,
            p_value: 1.0,
        });
    }
    let n = total as f64;
    let mut chi2 = 0.0;
    for (&observed, &weight) in visitors.iter().zip(weights) {
        let expected = n * (weight / largest / weight_sum);
        let gap = observed as f64 - expected;
        chi2 += gap * gap / expected;
    }
    let chi2 = if chi2.is_finite() { chi2 } else { f64::MAX };
    let p_value = if chi2 == 0.0 {
        1.0
    } else {
        gamma_q(df as f64 / 2.0, chi2 / 2.0)
    };
    let p_value = if p_value.is_finite() {
        p_value.clamp(0.0, 1.0)
    } else {
        0.0
    };
    Ok(Srm { chi2, df, p_value })
}

/// p̂_B − p̂_A = (c_B n_A − c_A n_B)/(n_A n_B), from the exact integer numerator so that close
/// rates do not cancel. `None` when an arm has no visitors.
fn exact_difference(control: Arm, variant: Arm) -> Option<f64> {
    if control.visitors == 0 || variant.visitors == 0 {
        return None;
    }
    let (sign, numerator) = cross_difference(control, variant);
    let denominator = u128::from(control.visitors) * u128::from(variant.visitors);
    Some(sign * (numerator as f64 / denominator as f64))
}

/// |c_B n_A − c_A n_B| and its sign (±1.0); each product is below 2^128.
fn cross_difference(control: Arm, variant: Arm) -> (f64, u128) {
    let b = u128::from(variant.conversions) * u128::from(control.visitors);
    let a = u128::from(control.conversions) * u128::from(variant.visitors);
    if b >= a {
        (1.0, b - a)
    } else {
        (-1.0, a - b)
    }
}

/// An estimate when all three numbers are finite (they always are for valid counts; this
/// keeps the no-NaN promise unconditional).
fn finite_estimate(value: f64, lower: f64, upper: f64) -> Option<Estimate> {
    (value.is_finite() && lower.is_finite() && upper.is_finite()).then_some(Estimate {
        value,
        interval: Interval { lower, upper },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::special::tests::{num, vectors, Worst};
    use serde_json::Value;

    fn arm(v: &Value) -> Arm {
        let c = v[0].as_u64().expect("conversions");
        let n = v[1].as_u64().expect("visitors");
        Arm::new(c, n).expect("a valid arm")
    }

    fn confidence(v: &Value) -> Confidence {
        Confidence::new(num(v)).expect("a valid confidence")
    }

    fn rows<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("vectors have no {key}"))
    }

    fn check_estimate(worst: &mut Worst, what: &str, actual: Option<Estimate>, expected: &Value) {
        match (actual, expected) {
            (None, Value::Null) => {}
            (Some(e), Value::Array(x)) => {
                worst.check(&format!("{what} value"), e.value, num(&x[0]), false);
                worst.check(
                    &format!("{what} lower"),
                    e.interval.lower,
                    num(&x[1]),
                    false,
                );
                worst.check(
                    &format!("{what} upper"),
                    e.interval.upper,
                    num(&x[2]),
                    false,
                );
            }
            (actual, expected) => worst
                .failures
                .push(format!("{what}: got {actual:?}, expected {expected}")),
        }
    }

    #[test]
    fn wilson_intervals_match_the_vectors() {
        let v = vectors();
        let mut worst = Worst::default();
        for row in rows(&v, "wilson") {
            let a = arm(row);
            let conf = confidence(&row[2]);
            let what = format!("{a:?} at {}", conf.level());
            let Some(w) = wilson(a, conf) else {
                worst.failures.push(format!("{what}: no interval"));
                continue;
            };
            worst.check(
                &format!("{what} lower"),
                w.interval.lower,
                num(&row[3]),
                false,
            );
            worst.check(
                &format!("{what} upper"),
                w.interval.upper,
                num(&row[4]),
                false,
            );
        }
        worst.finish("wilson");
    }

    #[test]
    fn z_tests_differences_and_lifts_match_the_vectors() {
        let v = vectors();
        let mut z = Worst::default();
        let mut p = Worst::default();
        let mut diff = Worst::default();
        let mut lift = Worst::default();
        for row in rows(&v, "compare") {
            let (a, b, conf) = (
                arm(&row["a"]),
                arm(&row["b"]),
                confidence(&row["confidence"]),
            );
            let what = format!("A={a:?} B={b:?} at {}", conf.level());
            let c = compare(a, b, conf);
            match (c.z_test, &row["z"]) {
                (None, Value::Null) => {}
                (Some(t), expected) if !expected.is_null() => {
                    z.check(&what, t.z, num(expected), false);
                    p.check(&what, t.p_value, num(&row["p_value"]), true);
                }
                (actual, expected) => z
                    .failures
                    .push(format!("{what}: z-test {actual:?}, expected {expected}")),
            }
            check_estimate(&mut diff, &what, c.difference, &row["diff"]);
            check_estimate(&mut lift, &what, c.lift, &row["lift"]);
        }
        z.finish("z_test z");
        p.finish("z_test p_value");
        diff.finish("diff_interval");
        lift.finish("lift_interval");
    }

    #[test]
    fn sample_sizes_match_the_vectors() {
        let v = vectors();
        let mut worst = Worst::default();
        let mut near_integer = 0;
        for row in rows(&v, "sample_size") {
            let (baseline, mde, power) =
                (num(&row["baseline"]), num(&row["mde"]), num(&row["power"]));
            let conf = confidence(&row["confidence"]);
            let variants = row["variants"].as_u64().expect("variants") as u32;
            let exact = num(&row["exact"]);
            let per_variant = row["per_variant"].as_u64().expect("per_variant");
            let total = row["total"].as_u64().expect("total");
            let what = format!("p1={baseline} mde={mde} power={power} at {}", conf.level());
            // The f64 computation of n has a relative error far below 1e-12, but no f64
            // computation can place n ≈ 1e13 or more exactly against the next integer, nor an
            // n within 1e-12·n of one: there ceil(n ∓ 1e-12·n) bound the answer.
            let slack = 1e-12 * exact;
            let (low, high) = ((exact - slack).ceil(), (exact + slack).ceil());
            match sample_size(baseline, mde, power, conf, variants) {
                Ok(s) if s.per_variant == per_variant && s.total == total => {
                    worst.check(&what, s.per_variant as f64, per_variant as f64, false);
                }
                Ok(s)
                    if (low..=high).contains(&(s.per_variant as f64))
                        && Some(s.total) == s.per_variant.checked_mul(u64::from(variants)) =>
                {
                    near_integer += 1;
                    worst.record(&what, s.per_variant as f64, per_variant as f64, false);
                }
                other => worst.failures.push(format!(
                    "{what}: got {other:?}, expected {per_variant} ({exact}) per variant, {total}"
                )),
            }
        }
        println!("sample_size: {near_integer} within 1e-12 relative of an integer boundary");
        worst.finish("sample_size");
    }

    #[test]
    fn srm_matches_the_vectors() {
        let v = vectors();
        let mut chi2 = Worst::default();
        let mut p = Worst::default();
        for row in rows(&v, "srm") {
            let visitors: Vec<u64> = row["visitors"]
                .as_array()
                .expect("visitors")
                .iter()
                .map(|x| x.as_u64().expect("a count"))
                .collect();
            let weights: Vec<f64> = row["weights"]
                .as_array()
                .expect("weights")
                .iter()
                .map(num)
                .collect();
            let what = format!("{visitors:?} against {weights:?}");
            match srm(&visitors, &weights) {
                Ok(s) => {
                    chi2.check(&what, s.chi2, num(&row["chi2"]), false);
                    p.check(&what, s.p_value, num(&row["p_value"]), true);
                    if Some(s.df) != row["df"].as_u64() {
                        chi2.failures.push(format!("{what}: df {}", s.df));
                    }
                }
                Err(e) => chi2.failures.push(format!("{what}: {e}")),
            }
        }
        chi2.finish("srm chi2");
        p.finish("srm p_value");
    }

    fn arm_of(c: u64, n: u64) -> Arm {
        Arm::new(c, n).expect("a valid arm")
    }

    fn at(level: f64) -> Confidence {
        Confidence::new(level).expect("a valid confidence")
    }

    #[test]
    fn more_conversions_than_visitors_are_refused() {
        assert_eq!(
            Arm::new(3, 2),
            Err(StatsError::ConversionsExceedVisitors {
                conversions: 3,
                visitors: 2
            })
        );
        assert!(Arm::new(u64::MAX, u64::MAX - 1).is_err());
        assert!(Arm::new(0, 0).is_ok());
    }

    #[test]
    fn confidence_levels_outside_the_open_unit_interval_are_refused() {
        for level in [
            0.0,
            1.0,
            -0.5,
            1.5,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert!(Confidence::new(level).is_err(), "{level}");
        }
        assert!((at(0.95).z() - 1.959_963_984_540_054).abs() < 1e-15);
        assert_eq!(at(0.95).level(), 0.95);
    }

    #[test]
    fn an_arm_without_visitors_has_no_rate_interval_or_test() {
        let empty = arm_of(0, 0);
        let some = arm_of(5, 100);
        assert_eq!(empty.rate(), None);
        assert_eq!(wilson(empty, at(0.95)), None);
        assert_eq!(z_test(empty, some), None);
        assert_eq!(z_test(some, empty), None);
        assert_eq!(diff_interval(empty, some, at(0.95)), None);
        assert_eq!(lift_interval(some, empty, at(0.95)), None);
        let c = compare(empty, empty, at(0.9));
        assert_eq!(
            (c.control, c.variant, c.z_test, c.difference, c.lift),
            (None, None, None, None, None)
        );
    }

    #[test]
    fn the_z_test_is_none_when_nobody_or_everybody_converted() {
        assert_eq!(z_test(arm_of(0, 100), arm_of(0, 50)), None);
        assert_eq!(z_test(arm_of(100, 100), arm_of(50, 50)), None);
        assert!(z_test(arm_of(0, 100), arm_of(1, 50)).is_some());
        let tie = z_test(arm_of(7, 100), arm_of(7, 100)).expect("a test");
        assert_eq!((tie.z, tie.p_value), (0.0, 1.0));
    }

    #[test]
    fn the_lift_is_none_without_control_conversions() {
        assert_eq!(
            lift_interval(arm_of(0, 100), arm_of(5, 100), at(0.95)),
            None
        );
        let drop = lift_interval(arm_of(5, 100), arm_of(0, 100), at(0.95)).expect("a lift");
        assert_eq!(drop.value, -1.0);
    }

    #[test]
    fn counts_up_to_u64_max_do_not_overflow_or_give_nan() {
        let counts = [
            0,
            1,
            2,
            1 << 53,
            (1 << 53) + 1,
            u64::MAX / 2,
            u64::MAX - 1,
            u64::MAX,
        ];
        for &na in &counts {
            for &nb in &counts {
                for &ca in &[0, 1, na / 3, na.saturating_sub(1), na] {
                    for &cb in &[0, 1, nb / 7, nb.saturating_sub(1), nb] {
                        let (Ok(a), Ok(b)) = (Arm::new(ca.min(na), na), Arm::new(cb.min(nb), nb))
                        else {
                            continue;
                        };
                        let c = compare(a, b, at(0.999));
                        let numbers = [c.control, c.variant, c.difference, c.lift]
                            .into_iter()
                            .flatten()
                            .flat_map(|e| [e.value, e.interval.lower, e.interval.upper])
                            .chain(c.z_test.into_iter().flat_map(|t| [t.z, t.p_value]));
                        for x in numbers {
                            assert!(x.is_finite(), "{a:?} {b:?}: {c:?}");
                        }
                    }
                }
            }
        }
        // A difference of one conversion in 2^64 visitors is still seen exactly.
        let d = diff_interval(arm_of(1, u64::MAX), arm_of(2, u64::MAX), at(0.95)).expect("d");
        assert_eq!(d.value, 1.0 / u64::MAX as f64);
        let t = z_test(
            arm_of(u64::MAX / 2, u64::MAX),
            arm_of(u64::MAX / 2 + 1, u64::MAX),
        );
        assert!(t.is_some_and(|t| t.z > 0.0 && t.p_value > 0.99));
    }

    #[test]
    fn bad_sample_size_inputs_are_refused() {
        let c = at(0.95);
        let cases = [
            (0.0, 0.1, 0.8, 2, StatsError::Baseline(0.0)),
            (-0.1, 0.1, 0.8, 2, StatsError::Baseline(-0.1)),
            (1.0, -0.1, 0.8, 2, StatsError::Baseline(1.0)),
            (0.1, 0.0, 0.8, 2, StatsError::MinimumDetectableEffect(0.0)),
            (0.5, 1.0, 0.8, 2, StatsError::VariantRate(1.0)),
            (0.5, 1.5, 0.8, 2, StatsError::VariantRate(1.25)),
            (0.5, -1.0, 0.8, 2, StatsError::VariantRate(0.0)),
            (0.1, 0.1, 0.0, 2, StatsError::Power(0.0)),
            (0.1, 0.1, 1.0, 2, StatsError::Power(1.0)),
            (0.1, 0.1, 0.8, 1, StatsError::TooFewArms(1)),
            (0.1, 0.1, 0.8, 0, StatsError::TooFewArms(0)),
            (1e-12, 1e-9, 0.8, 2, StatsError::Overflow),
        ];
        for (baseline, mde, power, variants, expected) in cases {
            assert_eq!(
                sample_size(baseline, mde, power, c, variants),
                Err(expected),
                "{baseline} {mde} {power} {variants}"
            );
        }
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(sample_size(bad, 0.1, 0.8, c, 2).is_err());
            assert!(sample_size(0.1, bad, 0.8, c, 2).is_err());
            assert!(sample_size(0.1, 0.1, bad, c, 2).is_err());
        }
        // A total beyond u64 is refused even when one arm fits.
        let one = sample_size(1e-12, 0.01, 0.8, c, 2).expect("fits");
        assert!(one.per_variant.checked_mul(u64::from(u32::MAX)).is_none());
        assert_eq!(
            sample_size(1e-12, 0.01, 0.8, c, u32::MAX),
            Err(StatsError::Overflow)
        );
    }

    #[test]
    fn the_classic_sample_size_is_reproduced() {
        // 5 % baseline, +10 % relative, 80 % power, 95 %: 31,234 per variant (Fleiss, no
        // continuity correction).
        let s = sample_size(0.05, 0.1, 0.8, at(0.95), 2).expect("a size");
        assert_eq!(
            s,
            SampleSize {
                per_variant: 31_234,
                total: 62_468
            }
        );
        let three = sample_size(0.05, 0.1, 0.8, at(0.95), 3).expect("a size");
        assert_eq!(three.total, 3 * 31_234);
    }

    #[test]
    fn bad_srm_inputs_are_refused() {
        assert_eq!(srm(&[1], &[1.0]), Err(StatsError::TooFewArms(1)));
        assert_eq!(srm(&[], &[]), Err(StatsError::TooFewArms(0)));
        assert_eq!(
            srm(&[1, 2], &[1.0]),
            Err(StatsError::LengthMismatch {
                visitors: 2,
                weights: 1
            })
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    srm(&[1, 2], &[1.0, bad]),
                    Err(StatsError::Weight { index: 1, .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            srm(&[1, 2], &[f64::MAX, 1e-300]),
            Err(StatsError::Weight { index: 1, .. })
        ));
    }

    #[test]
    fn srm_of_no_visitors_or_an_exact_split_is_a_match() {
        assert_eq!(
            srm(&[0, 0, 0], &[1.0, 2.0, 3.0]),
            Ok(Srm {
                chi2: 0.0,
                df: 2,
                p_value: 1.0
            })
        );
        let even = srm(&[500, 500], &[0.5, 0.5]).expect("a test");
        assert_eq!((even.chi2, even.p_value), (0.0, 1.0));
        // An expected count of 1e-281 against 2^64 visitors: the chi-square saturates.
        let huge = srm(&[0, 0, u64::MAX], &[1.0, 1.0, 1e-300]).expect("a test");
        assert_eq!((huge.chi2, huge.p_value), (f64::MAX, 0.0));
        let max = srm(&[u64::MAX, 0], &[f64::MAX, f64::MAX]).expect("a test");
        assert!(max.chi2.is_finite() && max.p_value == 0.0, "{max:?}");
    }
}
