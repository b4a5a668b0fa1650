//! Bayesian (Beta-Binomial) comparison of A/B arms.
//!
//! Arm i with cᵢ conversions out of nᵢ visitors has the posterior Beta(1 + cᵢ, 1 + nᵢ − cᵢ)
//! (uniform prior). [`compare`] gives, for a control A and a variant B, P(p_B > p_A),
//! P(p_A > p_B) (each computed in its own right, to full relative precision even at 1e-300),
//! and the two expected losses E[max(p_A − p_B, 0)] and E[max(p_B − p_A, 0)];
//! [`prob_best`] gives P(arm i has the highest rate) for up to [`MAX_ARMS`] arms.
//!
//! # Method
//!
//! Everything is a one-dimensional integral on the logit scale u = ln(p / (1 − p)), where each
//! posterior density gᵢ is smooth and log-concave with no boundary singularity (see
//! [`super::beta`]; densities come from Loader's saddle-point form, so there is no cancellation
//! at 10⁸ visitors):
//!
//! - P(arm i beats all others) = ∫ gᵢ(u) Πⱼ≠ᵢ Gⱼ(u) du, with Gⱼ the cumulative distribution;
//! - E[max(p_A − p_B, 0)] = ∫ g_A(u) H_B(u) du with H_B(u) = ∫_{−∞}^u (σ(u) − σ(v)) g_B(v) dv,
//!   a positive integral (no difference of two nearly equal probabilities).
//!
//! Gⱼ and Hⱼ are built by cumulative integration on the same panels as the outer integral:
//! on each panel a 20-point Gauss–Legendre rule gives the full panel integral and its spectral
//! integration matrix the integral from the panel start to each node, so each density is
//! evaluated once per node and nothing else is needed. Panels are as wide as the local scale
//! of every density active there allows: width × |ln-slope| ≤ 8 and width × √(ln-curvature) ≤ 3
//! (halving them, and widening the tails to 70 nats, moves no result by more than 1e-13).
//!
//! Where to integrate: for the event "arm i beats every j" the joint density
//! gᵢ(u) Πⱼ gⱼ(vⱼ) on {vⱼ < u} is log-concave, and ψᵢ(u) = ln gᵢ(u) + Σⱼ ln gⱼ(min(u, modeⱼ))
//! is its maximum over the vⱼ. The outer u runs over the interval where ψᵢ is within
//! 45 nats of its maximum, and each gⱼ over the interval that keeps every Gⱼ(u) there
//! to the same relative precision. So a tiny probability (far-apart arms) is integrated around
//! its own peak, between the two posteriors, instead of being lost next to 1. The cost depends
//! on the shapes (and grows only like ln(1/P) for tiny P), never on the counts themselves.
//!
//! Evan Miller's closed form (a sum of α_B terms) is exact but far too slow at 10⁸; it is one
//! of the references the test vectors were made with (`scripts/stats/bayes_vectors.py`).

use super::beta::{logistic, Beta, Rule, RULE_POINTS};

/// The largest number of arms [`prob_best`] takes.
pub const MAX_ARMS: usize = 10;

/// How finely [`integrate`] works; [`Tuning::DEFAULT`] is what the public functions use
/// (the tests check that a finer tuning changes nothing).
#[derive(Debug, Clone, Copy)]
struct Tuning {
    /// How far below its peak (in nats) an integrand is treated as zero.
    tail_nats: f64,
    /// Largest panel width × |d ln g / du|.
    slope_width: f64,
    /// Largest panel width × √(−d² ln g / du²).
    curvature_width: f64,
}

impl Tuning {
    /// e⁻⁴⁵ ≈ 3e-20 of neglected tails; panels on which 20 points interpolate to ~1e-14.
    const DEFAULT: Tuning = Tuning {
        tail_nats: 45.0,
        slope_width: 8.0,
        curvature_width: 3.0,
    };
}
/// At most this many panels between two consecutive range end points (a guard: real inputs
/// need a few dozen in all).
const MAX_PANELS_PER_SEGMENT: f64 = 2000.0;
/// ln of the smallest probability worth integrating (e^-750 is below the smallest subnormal).
const UNDERFLOW_NATS: f64 = -750.0;
/// No logit beyond ±800 matters: σ(−800) underflows.
const LOGIT_LIMIT: f64 = 800.0;

/// One arm's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm {
    /// Visitors who converted (c ≤ visitors).
    pub conversions: u64,
    /// Visitors exposed to the arm.
    pub visitors: u64,
}

/// The Bayesian comparison of a variant B with the control A.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pairwise {
    /// P(p_B > p_A).
    pub prob_beats_control: f64,
    /// P(p_A > p_B), computed directly (not as 1 − the other).
    pub prob_control_beats: f64,
    /// E[max(p_A − p_B, 0)]: the expected loss in rate units of choosing B.
    pub expected_loss: f64,
    /// E[max(p_B − p_A, 0)]: the expected loss in rate units of keeping A.
    pub expected_loss_control: f64,
}

/// Inputs the Bayesian statistics refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BayesError {
    /// An arm has more conversions than visitors.
    #[error("arm {arm} has {conversions} conversions out of {visitors} visitors")]
    MoreConversionsThanVisitors {
        /// The arm's position (0 is the control).
        arm: usize,
        /// Its conversions.
        conversions: u64,
        /// Its visitors.
        visitors: u64,
    },
    /// No arms at all.
    #[error("no arms to compare")]
    NoArms,
    /// More than [`MAX_ARMS`] arms.
    #[error("{0} arms, at most {MAX_ARMS} are supported")]
    TooManyArms(usize),
}

fn posterior(arm: Arm, index: usize) -> Result<Beta, BayesError> {
    Beta::posterior(arm.conversions, arm.visitors).ok_or(BayesError::MoreConversionsThanVisitors {
        arm: index,
        conversions: arm.conversions,
        visitors: arm.visitors,
    })
}

/// Compares a variant with the control: P(B > A), P(A > B) and both expected losses.
pub fn compare(control: Arm, variant: Arm) -> Result<Pairwise, BayesError> {
    let arms = [posterior(control, 0)?, posterior(variant, 1)?];
    let out = integrate(&arms, true, Tuning::DEFAULT);
    let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(f64::NAN);
    Ok(Pairwise {
        prob_beats_control: clamp_probability(at(&out.best, 1)),
        prob_control_beats: clamp_probability(at(&out.best, 0)),
        expected_loss: clamp_loss(at(&out.loss, 0)),
        expected_loss_control: clamp_loss(at(&out.loss, 1)),
    })
}

/// P(arm i has the highest conversion rate) for every arm, in input order (summing to 1 up to
/// rounding). One arm is best with probability 1.
pub fn prob_best(arms: &[Arm]) -> Result<Vec<f64>, BayesError> {
    if arms.is_empty() {
        return Err(BayesError::NoArms);
    }
    if arms.len() > MAX_ARMS {
        return Err(BayesError::TooManyArms(arms.len()));
    }
    let betas = arms
        .iter()
        .enumerate()
        .map(|(i, &arm)| posterior(arm, i))
        .collect::<Result<Vec<_>, _>>()?;
    if betas.len() == 1 {
        return Ok(vec![1.0]);
    }
    let out = integrate(&betas, false, Tuning::DEFAULT);
    Ok(out.best.into_iter().map(clamp_probability).collect())
}

fn clamp_probability(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// A loss is a difference of rates, in [0, 1]: the integral can overshoot 1 by a rounding error
/// at extreme counts (1 + 1.3e-15 for 2^64 − 1 of 2^64 − 1 against none of 2^64 − 1), and
/// anything not above 0 (a NaN included) is 0.
fn clamp_loss(loss: f64) -> f64 {
    if loss > 1.0 {
        1.0
    } else {
        loss.max(0.0)
    }
}

/// What [`integrate`] returns: `best[i]` = P(arm i beats all others) and, when asked for with
/// two arms, `loss[i]` = E[max(pᵢ − p_other, 0)].
struct Integrals {
    best: Vec<f64>,
    loss: Vec<f64>,
}

/// ψᵢ(u) = ln gᵢ(u) + Σⱼ≠ᵢ ln gⱼ(min(u, modeⱼ)) with its first and second derivatives.
fn psi(arms: &[Beta], modes: &[f64], i: usize, u: f64) -> (f64, f64, f64) {
    let (x, y) = logistic(u);
    let mut value = 0.0;
    let mut slope = 0.0;
    let mut curvature = 0.0;
    for (j, (arm, &mode)) in arms.iter().zip(modes.iter()).enumerate() {
        if j == i || u < mode {
            value += arm.ln_pdf_logit_xy(x, y);
            slope += arm.logit_slope(x, y);
            curvature += arm.logit_curvature(x, y);
        } else {
            value += arm.ln_pdf_logit_peak();
        }
    }
    (value, slope, curvature)
}

/// The point on the `direction` side (±1) of `peak` where the concave function `f` (value,
/// slope) falls to `level`, approached from outside so that the answer never cuts into the
/// superlevel set by more than rounding: Newton's tangent from a point outside lands outside.
fn level_point(
    f: impl Fn(f64) -> (f64, f64),
    peak: f64,
    level: f64,
    direction: f64,
    step: f64,
) -> f64 {
    let clamp = |u: f64| u.clamp(-LOGIT_LIMIT, LOGIT_LIMIT);
    let mut step = if step.is_finite() && step > 0.0 {
        step
    } else {
        1.0
    };
    let mut u = clamp(peak + direction * step);
    // Find a point outside by doubling.
    for _ in 0..64 {
        let (v, _) = f(u);
        if v < level || v.is_nan() || u.abs() >= LOGIT_LIMIT {
            break;
        }
        step *= 2.0;
        u = clamp(peak + direction * step);
    }
    for _ in 0..100 {
        let (v, d) = f(u);
        if v.is_nan() {
            break;
        }
        if v <= level && v >= level - 0.5 {
            break;
        }
        if v == f64::NEG_INFINITY {
            // Underflow far out: move back towards the peak.
            u = 0.5 * (u + peak);
            continue;
        }
        let next = u - (v - level) / d;
        let next = if next.is_finite() {
            clamp(next)
        } else {
            clamp(peak + direction * LOGIT_LIMIT)
        };
        if next == u {
            break;
        }
        u = next;
    }
    u
}

/// The logit interval [lo, hi] on which each arm's density must be integrated, and for each
/// arm whether "it beats all others" is so unlikely that it underflows (then it is 0 and its
/// region, which may reach far into steep tails, is not integrated at all).
fn ranges(arms: &[Beta], tuning: Tuning) -> (Vec<(f64, f64)>, Vec<bool>) {
    let modes: Vec<f64> = arms.iter().map(Beta::logit_mode).collect();
    let lowest = modes.iter().copied().fold(f64::INFINITY, f64::min);
    let highest = modes.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut out: Vec<(f64, f64)> = vec![(f64::INFINITY, f64::NEG_INFINITY); arms.len()];
    let mut negligible = vec![false; arms.len()];
    let widen = |r: &mut (f64, f64), lo: f64, hi: f64| {
        r.0 = r.0.min(lo);
        r.1 = r.1.max(hi);
    };
    for i in 0..arms.len() {
        // Maximise the concave ψᵢ: its slope is ≥ 0 left of every mode, ≤ 0 right of them.
        let (mut lo, mut hi) = (lowest, highest);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if psi(arms, &modes, i, mid).1 > 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let top = 0.5 * (lo + hi);
        let (peak, _, curvature) = psi(arms, &modes, i, top);
        // The probability is at most e^peak times the volume of its region (each side well
        // under 200 on the logit scale): below e^-750 it is 0 in f64.
        if peak + arms.len() as f64 * 200f64.ln() < UNDERFLOW_NATS {
            if let Some(n) = negligible.get_mut(i) {
                *n = true;
            }
            continue;
        }
        let level = peak - tuning.tail_nats;
        let step = (2.0 * tuning.tail_nats / curvature).sqrt();
        let f = |u: f64| {
            let (v, d, _) = psi(arms, &modes, i, u);
            (v, d)
        };
        let outer_lo = level_point(f, top, level, -1.0, step);
        let outer_hi = level_point(f, top, level, 1.0, step);
        if let Some(r) = out.get_mut(i) {
            widen(r, outer_lo, outer_hi);
        }
        // Each other arm: enough of its left tail that Gⱼ(u) is accurate at u = outer_lo,
        // and up to outer_hi (or where it is negligible).
        for (j, (arm, &mode)) in arms.iter().zip(modes.iter()).enumerate() {
            if j == i {
                continue;
            }
            let g = |u: f64| {
                let (x, y) = logistic(u);
                (arm.ln_pdf_logit_xy(x, y), arm.logit_slope(x, y))
            };
            let (xm, ym) = logistic(mode);
            let step = (2.0 * tuning.tail_nats / arm.logit_curvature(xm, ym)).sqrt();
            let from = outer_lo.min(mode);
            let left_level = g(from).0 - tuning.tail_nats;
            let lo = level_point(g, mode, left_level, -1.0, step.max(mode - from));
            let hi = level_point(
                g,
                mode,
                arm.ln_pdf_logit_peak() - tuning.tail_nats,
                1.0,
                step,
            );
            if let Some(r) = out.get_mut(j) {
                widen(r, lo, hi.min(outer_hi).max(lo));
            }
        }
    }
    (out, negligible)
}

/// σ(to) − σ(from) from the logistic pairs of both points, using the side (x or 1 − x) that
/// is below ½ for precision.
fn logistic_step(from: (f64, f64), to: (f64, f64), lower_side: bool) -> f64 {
    if lower_side {
        to.0 - from.0
    } else {
        from.1 - to.1
    }
}

/// The widest panel from `u0` allowed for the densities in `active`.
fn panel_width(arms: &[Beta], active: &[usize], u0: f64, tuning: Tuning) -> f64 {
    let crit = |a: f64, b: f64| {
        let (xa, ya) = logistic(a);
        let (xb, yb) = logistic(b);
        let xy = if a < 0.0 && b > 0.0 {
            0.25
        } else {
            (xa * ya).max(xb * yb)
        };
        let mut w = f64::INFINITY;
        for &j in active {
            if let Some(arm) = arms.get(j) {
                let slope = arm
                    .logit_slope(xa, ya)
                    .abs()
                    .max(arm.logit_slope(xb, yb).abs());
                let curvature = arm.a() * xy + arm.b() * xy;
                w = w
                    .min(tuning.slope_width / slope)
                    .min(tuning.curvature_width / curvature.sqrt());
            }
        }
        w
    };
    let mut w = crit(u0, u0);
    for _ in 0..3 {
        let w2 = crit(u0, u0 + w);
        if w2 >= w {
            break;
        }
        w = w2;
    }
    w
}

/// The panel loop: cumulative distributions (and H for losses) of every arm, and the outer
/// integrals, over the union of the arms' ranges.
fn integrate(arms: &[Beta], losses: bool, tuning: Tuning) -> Integrals {
    let k = arms.len();
    let rule = Rule::get();
    let (ranges, negligible) = ranges(arms, tuning);
    let mut cuts: Vec<f64> = ranges
        .iter()
        .flat_map(|&(lo, hi)| [lo, hi])
        .filter(|c| c.is_finite())
        .collect();
    cuts.sort_by(f64::total_cmp);
    cuts.dedup();

    let mut best = vec![0.0; k];
    let mut loss = vec![0.0; k];
    // Running Gⱼ and Hⱼ at the current panel start.
    let mut cdf = vec![0.0; k];
    let mut h_run = vec![0.0; k];
    // Per-panel values at the nodes.
    let mut dens = vec![[0.0; RULE_POINTS]; k];
    let mut cdf_at = vec![[0.0; RULE_POINTS]; k];
    let mut h_at = vec![[0.0; RULE_POINTS]; k];
    let mut active: Vec<usize> = Vec::with_capacity(k);

    for seg in cuts.windows(2) {
        let (s0, s1) = match seg {
            [a, b] => (*a, *b),
            _ => continue,
        };
        active.clear();
        active.extend((0..k).filter(|&j| ranges.get(j).is_some_and(|r| r.0 <= s0 && r.1 >= s1)));
        if active.is_empty() {
            if losses {
                let lower = 0.5 * (s0 + s1) <= 0.0;
                let d = logistic_step(logistic(s0), logistic(s1), lower);
                for (h, c) in h_run.iter_mut().zip(cdf.iter()) {
                    *h += d * c;
                }
            }
            continue;
        }
        let min_width = (s1 - s0) / MAX_PANELS_PER_SEGMENT;
        let mut u0 = s0;
        while u0 < s1 {
            let mut w = panel_width(arms, &active, u0, tuning).max(min_width);
            let rest = s1 - u0;
            let count = (rest / w).ceil();
            if count <= 2.0 {
                w = rest / count.max(1.0);
            }
            let mut u1 = if rest <= w { s1 } else { u0 + w };
            if u1 <= u0 {
                u1 = s1;
            }
            let half = 0.5 * (u1 - u0);
            let lower = 0.5 * (u0 + u1) <= 0.0;
            let sign = if lower { 1.0 } else { -1.0 };
            let start = logistic(u0);
            let end = logistic(u1);
            let side = |p: (f64, f64)| if lower { p.0 } else { p.1 };
            let mut xs = [(0.0, 0.0); RULE_POINTS];
            for (xy, t) in xs.iter_mut().zip(rule.nodes.iter()) {
                *xy = logistic(u0 + half * (1.0 + t));
            }
            for j in 0..k {
                let is_active = active.contains(&j);
                let (Some(arm), Some(d), Some(c_at), Some(hh), Some(c0), Some(h0)) = (
                    arms.get(j),
                    dens.get_mut(j),
                    cdf_at.get_mut(j),
                    h_at.get_mut(j),
                    cdf.get_mut(j),
                    h_run.get_mut(j),
                ) else {
                    continue;
                };
                if !is_active {
                    *d = [0.0; RULE_POINTS];
                    for (l, xy) in xs.iter().enumerate() {
                        if let (Some(c), Some(h)) = (c_at.get_mut(l), hh.get_mut(l)) {
                            *c = *c0;
                            *h = *h0 + logistic_step(start, *xy, lower) * *c0;
                        }
                    }
                    *h0 += logistic_step(start, end, lower) * *c0;
                    continue;
                }
                let mut sd = [0.0; RULE_POINTS];
                for ((dv, sv), xy) in d.iter_mut().zip(sd.iter_mut()).zip(xs.iter()) {
                    *dv = arm.ln_pdf_logit_xy(xy.0, xy.1).exp();
                    *sv = side(*xy) * *dv;
                }
                for (l, (row, xy)) in rule.cumulative.iter().zip(xs.iter()).enumerate() {
                    let mut ig = 0.0;
                    let mut isg = 0.0;
                    for ((s, dv), sv) in row.iter().zip(d.iter()).zip(sd.iter()) {
                        ig += s * dv;
                        isg += s * sv;
                    }
                    ig *= half;
                    isg *= half;
                    if let (Some(c), Some(h)) = (c_at.get_mut(l), hh.get_mut(l)) {
                        *c = *c0 + ig;
                        if losses {
                            *h = *h0
                                + logistic_step(start, *xy, lower) * *c0
                                + sign * (side(*xy) * ig - isg);
                        }
                    }
                }
                let mut ig = 0.0;
                let mut isg = 0.0;
                for ((w, dv), sv) in rule.weights.iter().zip(d.iter()).zip(sd.iter()) {
                    ig += w * dv;
                    isg += w * sv;
                }
                ig *= half;
                isg *= half;
                if losses {
                    *h0 += logistic_step(start, end, lower) * *c0 + sign * (side(end) * ig - isg);
                }
                *c0 += ig;
            }
            // Outer integrals for the active arms.
            for &i in &active {
                let Some(di) = dens.get(i) else { continue };
                let mut sum_best = 0.0;
                let mut sum_loss = 0.0;
                for (l, (w, g)) in rule.weights.iter().zip(di.iter()).enumerate() {
                    let mut prod = 1.0;
                    for (j, c_at) in cdf_at.iter().enumerate() {
                        if j != i {
                            prod *= c_at.get(l).copied().unwrap_or(0.0);
                        }
                    }
                    sum_best += w * g * prod;
                    if losses {
                        let other = if i == 0 { 1 } else { 0 };
                        let h = h_at
                            .get(other)
                            .and_then(|h| h.get(l))
                            .copied()
                            .unwrap_or(0.0);
                        sum_loss += w * g * h;
                    }
                }
                if let Some(b) = best.get_mut(i) {
                    *b += half * sum_best;
                }
                if let Some(lv) = loss.get_mut(i) {
                    *lv += half * sum_loss;
                }
            }
            u0 = u1;
        }
    }
    for (i, &skip) in negligible.iter().enumerate() {
        if skip {
            if let (Some(b), Some(l)) = (best.get_mut(i), loss.get_mut(i)) {
                *b = 0.0;
                *l = 0.0;
            }
        }
    }
    Integrals { best, loss }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn arm(conversions: u64, visitors: u64) -> Arm {
        Arm {
            conversions,
            visitors,
        }
    }

    fn vectors() -> Value {
        serde_json::from_str(include_str!("vectors/bayes.json")).expect("bayes.json parses")
    }

    fn pair_of(v: &Value) -> Arm {
        arm(v[0].as_u64().expect("c"), v[1].as_u64().expect("n"))
    }

    /// Worst absolute and relative error of one quantity over the vectors.
    #[derive(Default)]
    struct Worst {
        abs: f64,
        rel: f64,
        abs_at: String,
        rel_at: String,
    }

    impl Worst {
        /// Records |got − want|, relative only where `relative` holds and want ≥ 1e-300.
        fn record(&mut self, got: f64, want: f64, relative: bool, at: &str) {
            let abs = (got - want).abs();
            if abs > self.abs || abs.is_nan() {
                self.abs = abs;
                self.abs_at = at.to_string();
            }
            if relative && want >= 1e-300 {
                let rel = abs / want;
                if rel > self.rel || rel.is_nan() {
                    self.rel = rel;
                    self.rel_at = at.to_string();
                }
            }
        }

        fn report(&self, name: &str) {
            println!(
                "{name:24} max abs {:.2e} ({}), max rel {:.2e} ({})",
                self.abs, self.abs_at, self.rel, self.rel_at
            );
        }
    }

    #[test]
    fn pairwise_quantities_match_the_high_precision_vectors() {
        let v = vectors();
        let pairs = v["pairs"].as_array().expect("pairs");
        assert!(pairs.len() >= 30);
        let names = [
            "prob_beats_control",
            "prob_control_beats",
            "expected_loss",
            "expected_loss_control",
        ];
        let mut worst: Vec<Worst> = names.iter().map(|_| Worst::default()).collect();
        for case in pairs {
            let at = case["what"].as_str().expect("what").to_string();
            let got = compare(pair_of(&case["control"]), pair_of(&case["variant"])).expect("valid");
            let got = [
                got.prob_beats_control,
                got.prob_control_beats,
                got.expected_loss,
                got.expected_loss_control,
            ];
            let loss_exact = case["loss_exact"].as_bool().expect("loss_exact");
            for (k, name) in names.iter().enumerate() {
                let want = case[name].as_f64().expect("number");
                worst[k].record(got[k], want, k < 2 || loss_exact, &at);
            }
        }
        for (w, name) in worst.iter().zip(names) {
            w.report(name);
            assert!(
                w.abs <= 1e-12,
                "{name}: abs error {:e} at {}",
                w.abs,
                w.abs_at
            );
            assert!(
                w.rel <= 1e-9,
                "{name}: rel error {:e} at {}",
                w.rel,
                w.rel_at
            );
        }
    }

    #[test]
    fn prob_best_matches_the_vectors() {
        let v = vectors();
        let cases = v["prob_best"].as_array().expect("prob_best");
        let mut worst = Worst::default();
        for case in cases {
            let arms: Vec<Arm> = case["arms"]
                .as_array()
                .expect("arms")
                .iter()
                .map(pair_of)
                .collect();
            let want: Vec<f64> = case["prob_best"]
                .as_array()
                .expect("probs")
                .iter()
                .map(|p| p.as_f64().expect("number"))
                .collect();
            let got = prob_best(&arms).expect("valid");
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                worst.record(*g, *w, true, &format!("{arms:?} arm {i}"));
            }
            let sum: f64 = got.iter().sum();
            assert!((sum - 1.0).abs() <= 1e-12, "{arms:?} sums to {sum}");
        }
        worst.report("prob_best");
        // The reference itself (quadrature over double-precision CDFs) is good to ~1e-13.
        assert!(
            worst.abs <= 1e-11,
            "abs error {:e} at {}",
            worst.abs,
            worst.abs_at
        );
        assert!(
            worst.rel <= 1e-8,
            "rel error {:e} at {}",
            worst.rel,
            worst.rel_at
        );
    }

    #[test]
    fn beta_densities_and_stirling_errors_match_the_vectors() {
        let v = vectors();
        let mut worst = Worst::default();
        for case in v["beta_ln_pdf"].as_array().expect("beta_ln_pdf") {
            let (a, b, x) = (
                case["a"].as_f64().expect("a"),
                case["b"].as_f64().expect("b"),
                case["x"].as_f64().expect("x"),
            );
            let want = case["ln_pdf"].as_f64().expect("ln_pdf");
            let got = Beta::new(a, b).expect("valid").ln_pdf(x);
            // ln values: absolute error in the log is the relative error of the density.
            worst.record(got, want, false, &format!("Beta({a}, {b}) at {x}"));
        }
        worst.report("beta ln_pdf");
        // ln f is ill-conditioned in x at large a, b (d ln f / dx ≈ 4e4 two sd from the mode
        // at 1e8, times half an ulp of x ≈ 2e-12): the bound allows for the input's rounding.
        assert!(
            worst.abs <= 1e-11,
            "ln_pdf error {:e} at {}",
            worst.abs,
            worst.abs_at
        );
        let mut worst = Worst::default();
        for case in v["stirling_error"].as_array().expect("stirling_error") {
            let z = case["z"].as_f64().expect("z");
            let want = case["stirling_error"].as_f64().expect("value");
            worst.record(
                super::super::beta::stirling_error(z),
                want,
                true,
                &format!("{z}"),
            );
        }
        worst.report("stirling_error");
        // δ enters ln densities additively: its absolute error is what counts.
        assert!(
            worst.abs <= 1e-15,
            "stirling error {:e} at {}",
            worst.abs,
            worst.abs_at
        );
    }

    #[test]
    fn the_quadrature_rule_is_exact_on_polynomials() {
        let rule = Rule::get();
        let total: f64 = rule.weights.iter().sum();
        assert!((total - 2.0).abs() < 1e-14);
        // ∫₋₁^t s⁷ ds = (t⁸ − 1)/8 from the values at the nodes.
        for (row, t) in rule.cumulative.iter().zip(rule.nodes.iter()) {
            let got: f64 = row
                .iter()
                .zip(rule.nodes.iter())
                .map(|(s, x)| s * x.powi(7))
                .sum();
            assert!(
                (got - (t.powi(8) - 1.0) / 8.0).abs() < 1e-14,
                "{got} at {t}"
            );
        }
    }

    #[test]
    fn more_conversions_than_visitors_are_refused() {
        assert_eq!(
            compare(arm(1, 0), arm(0, 0)),
            Err(BayesError::MoreConversionsThanVisitors {
                arm: 0,
                conversions: 1,
                visitors: 0
            })
        );
        assert_eq!(
            compare(arm(0, 0), arm(11, 10)),
            Err(BayesError::MoreConversionsThanVisitors {
                arm: 1,
                conversions: 11,
                visitors: 10
            })
        );
        assert_eq!(
            prob_best(&[arm(0, 1), arm(1, 1), arm(u64::MAX, 3)]),
            Err(BayesError::MoreConversionsThanVisitors {
                arm: 2,
                conversions: u64::MAX,
                visitors: 3
            })
        );
        assert_eq!(prob_best(&[]), Err(BayesError::NoArms));
        assert_eq!(
            prob_best(&[arm(0, 0); 11]),
            Err(BayesError::TooManyArms(11))
        );
        assert_eq!(prob_best(&[arm(3, 7)]), Ok(vec![1.0]));
        assert_eq!(Beta::posterior(2, 1), None);
        assert_eq!(Beta::new(0.0, 1.0), None);
        assert_eq!(Beta::new(1.0, f64::INFINITY), None);
        assert_eq!(Beta::new(f64::NAN, 1.0), None);
    }

    /// A spread of arms from none to u64::MAX visitors.
    fn edge_arms() -> Vec<Arm> {
        let big = u64::MAX;
        vec![
            arm(0, 0),
            arm(0, 1),
            arm(1, 1),
            arm(0, 100_000_000),
            arm(100_000_000, 100_000_000),
            arm(50_000_000, 100_000_000),
            arm(7, 1_000_000_000_000),
            arm(1 << 53, 1 << 54),
            arm(0, big),
            arm(big, big),
            arm(big / 2, big),
            arm(big - 1, big),
            arm(1, big),
        ]
    }

    #[test]
    fn any_counts_give_finite_probabilities_that_sum_to_one() {
        let arms = edge_arms();
        let mut worst: f64 = 0.0;
        for &a in &arms {
            for &b in &arms {
                let p = compare(a, b).expect("valid");
                for q in [
                    p.prob_beats_control,
                    p.prob_control_beats,
                    p.expected_loss,
                    p.expected_loss_control,
                ] {
                    assert!(q.is_finite() && q >= 0.0, "{a:?} {b:?}: {p:?}");
                }
                assert!(p.prob_beats_control <= 1.0 && p.prob_control_beats <= 1.0);
                // Beyond 2^53 visitors the counts themselves are rounded and a posterior's
                // width (~1e-8 on the logit scale) nears the rounding of x = σ(u) times N:
                // the result degrades gracefully rather than staying at 1e-15.
                let huge = a.visitors.max(b.visitors) > 1 << 40;
                let tolerance = if huge { 1e-6 } else { 1e-12 };
                let sum = p.prob_beats_control + p.prob_control_beats;
                worst = worst.max((sum - 1.0).abs());
                assert!((sum - 1.0).abs() <= tolerance, "{a:?} {b:?}: {p:?}");
            }
        }
        println!("worst |P(B>A) + P(A>B) - 1| over the edge table: {worst:.2e}");
        for window in arms.windows(4) {
            let p = prob_best(window).expect("valid");
            assert!(
                p.iter().all(|q| q.is_finite() && (0.0..=1.0).contains(q)),
                "{window:?}: {p:?}"
            );
            let huge = window.iter().any(|a| a.visitors > 1 << 40);
            let tolerance = if huge { 1e-6 } else { 1e-12 };
            let sum: f64 = p.iter().sum();
            assert!((sum - 1.0).abs() <= tolerance, "{window:?}: {p:?}");
        }
    }

    #[test]
    fn swapping_the_arms_swaps_the_answers() {
        let (a, b) = (arm(120, 1000), arm(100, 1000));
        let ab = compare(a, b).expect("valid");
        let ba = compare(b, a).expect("valid");
        assert!((ab.prob_beats_control - ba.prob_control_beats).abs() < 1e-15);
        assert!((ab.expected_loss - ba.expected_loss_control).abs() < 1e-15);
        // E[(pA − pB)+] − E[(pB − pA)+] = mean_A − mean_B.
        let diff = ab.expected_loss - ab.expected_loss_control;
        assert!(
            (diff - (121.0 / 1002.0 - 101.0 / 1002.0)).abs() < 1e-15,
            "{diff}"
        );
    }

    #[test]
    fn finer_panels_and_wider_tails_change_nothing() {
        let fine = Tuning {
            tail_nats: 70.0,
            slope_width: 2.0,
            curvature_width: 0.8,
        };
        let cases = [
            (arm(0, 0), arm(0, 0)),
            (arm(10, 100), arm(15, 100)),
            (arm(300, 1000), arm(500, 1000)),
            (arm(0, 1_000_000), arm(5, 1_000_000)),
            (arm(50_000_000, 100_000_000), arm(50_010_000, 100_000_000)),
            (arm(30_000_000, 100_000_000), arm(30_100_000, 100_000_000)),
            (arm(3, 10), arm(30_000_000, 100_000_000)),
            (arm(100_000_000, 100_000_000), arm(99_999_998, 100_000_000)),
        ];
        let (mut worst_abs, mut worst_rel): (f64, f64) = (0.0, 0.0);
        for (a, b) in cases {
            let arms = [
                posterior(a, 0).expect("valid"),
                posterior(b, 1).expect("valid"),
            ];
            let coarse = integrate(&arms, true, Tuning::DEFAULT);
            let finer = integrate(&arms, true, fine);
            for (c, f) in coarse
                .best
                .iter()
                .chain(&coarse.loss)
                .zip(finer.best.iter().chain(&finer.loss))
            {
                let abs = (c - f).abs();
                worst_abs = worst_abs.max(abs);
                if *f > 1e-300 {
                    worst_rel = worst_rel.max(abs / f);
                }
            }
        }
        println!("default vs fine tuning: max abs {worst_abs:.2e}, max rel {worst_rel:.2e}");
        assert!(
            worst_abs < 1e-13 && worst_rel < 1e-10,
            "{worst_abs:e} {worst_rel:e}"
        );
    }

    #[test]
    #[ignore = "timing: run with --release --ignored --nocapture"]
    fn timing() {
        let cases = [
            ("1e3", arm(100, 1000), arm(120, 1000)),
            ("1e6", arm(100_000, 1_000_000), arm(101_000, 1_000_000)),
            (
                "1e8",
                arm(50_000_000, 100_000_000),
                arm(50_010_000, 100_000_000),
            ),
            (
                "1e8 tiny P",
                arm(30_000_000, 100_000_000),
                arm(30_100_000, 100_000_000),
            ),
            ("10 vs 1e8", arm(3, 10), arm(30_000_000, 100_000_000)),
        ];
        for (name, a, b) in cases {
            let reps = 2000;
            let start = std::time::Instant::now();
            let mut sink = 0.0;
            for _ in 0..reps {
                sink += compare(a, b).map(|p| p.expected_loss).unwrap_or(0.0);
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / reps as f64;
            println!("compare {name:12} {us:8.1} µs/call ({sink:.3e})");
        }
        let best = [
            ("4 arms 1e3", 1000),
            ("4 arms 1e6", 1_000_000),
            ("4 arms 1e8", 100_000_000),
        ];
        for (name, n) in best {
            let arms = [
                arm(n / 100, n),
                arm(n / 100 + n / 20_000, n),
                arm(n / 100 + n / 10_000, n),
                arm(n / 100 - n / 10_000, n),
            ];
            let reps = 1000;
            let start = std::time::Instant::now();
            let mut sink = 0.0;
            for _ in 0..reps {
                sink += prob_best(&arms).map(|p| p[0]).unwrap_or(0.0);
            }
            let us = start.elapsed().as_secs_f64() * 1e6 / reps as f64;
            println!("prob_best {name:12} {us:8.1} µs/call ({sink:.3e})");
        }
    }
}
