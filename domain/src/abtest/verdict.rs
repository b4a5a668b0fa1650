//! What the conclusion process manager decides about one running test, as pure rules: the
//! sample-ratio-mismatch alert ([`srm_alert`]) and the conclusion with a reason a person can
//! read ([`verdict`]). The decision itself is [`conclude::decide`]; this adds the test's plan,
//! the variant keys and the figures behind the decision.

use super::TestDefinition;
use crate::stats::bayes::{self, Arm};
use crate::stats::conclude::{self, ConcludeError, Decision, Look, Method, Plan};
use crate::stats::frequentist::{self, Srm};

/// The smallest expected count (visitors × the variant's share of the weights) of every
/// variant before the SRM alert is considered: below it the chi-square approximation of
/// Pearson's statistic is not trusted (the usual rule of thumb).
pub const SRM_MIN_EXPECTED: f64 = 5.0;

/// The plan a test is judged by: its significance, power target, relative minimum detectable
/// effect and planned baseline.
pub fn plan_of(definition: &TestDefinition) -> Plan {
    Plan {
        significance: definition.significance,
        power: definition.power_target,
        mde_relative: definition.mde_relative,
        baseline_rate: definition.baseline_rate,
    }
}

/// The SRM alert of a test whose variants had `visitors` (in the definition's order): the
/// chi-square test against the weights when its p-value is below `threshold`. `None` for a
/// bandit (its allocation follows the posteriors, not the weights), while some variant's
/// expected count is below [`SRM_MIN_EXPECTED`], or when the split matches the weights.
pub fn srm_alert(definition: &TestDefinition, visitors: &[u64], threshold: f64) -> Option<Srm> {
    if definition.method == Method::Bandit || visitors.len() != definition.variants.len() {
        return None;
    }
    let weights: Vec<f64> = definition.weights().into_iter().map(f64::from).collect();
    let total_weight: f64 = weights.iter().sum();
    let total: f64 = visitors.iter().map(|&v| v as f64).sum();
    let smallest = weights.iter().copied().fold(f64::INFINITY, f64::min);
    if total_weight <= 0.0 || total * smallest / total_weight < SRM_MIN_EXPECTED {
        return None;
    }
    frequentist::srm(visitors, &weights)
        .ok()
        .filter(|s| s.p_value < threshold)
}

/// A test's conclusion.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The winning variant's key; `None`: no difference was found.
    pub winner: Option<String>,
    /// Why, with the figures that decided.
    pub reason: String,
}

/// Whether a running test with these counts (`arms` in the definition's order, the control
/// first) concludes now ([`conclude::decide`]), and why; `None` while it continues.
pub fn verdict(
    definition: &TestDefinition,
    arms: &[Arm],
) -> Result<Option<Verdict>, ConcludeError> {
    let plan = plan_of(definition);
    let key = |i: usize| {
        definition
            .variants
            .get(i)
            .map_or_else(|| format!("arm {i}"), |v| v.key.clone())
    };
    let comparisons = arms.len().saturating_sub(1).max(1) as f64;
    Ok(match conclude::decide(definition.method, &plan, arms)? {
        Decision::Continue => None,
        Decision::Winner { arm } => {
            let keys: Vec<String> = (0..arms.len()).map(key).collect();
            let evidence = match conclude::look(definition.method, &plan, arms) {
                Look::Sequential { alpha } => {
                    sequential_evidence(&plan, arms, &keys, arm, alpha / comparisons)
                }
                Look::FixedHorizon { alpha } => {
                    fixed_evidence(&plan, arms, &keys, arm, alpha / comparisons)
                }
            };
            let reason = match definition.method {
                Method::Frequentist => evidence,
                Method::Bayesian | Method::Bandit => {
                    let best = bayes::prob_best(arms)?;
                    let p_best = best.get(arm).copied().unwrap_or(0.0);
                    let mut reason = format!(
                        "{} is best with probability {} ≥ {}",
                        key(arm),
                        number(p_best),
                        number(plan.significance)
                    );
                    if definition.method == Method::Bayesian {
                        let chosen = arms[arm];
                        let mut loss = 0.0;
                        for (j, &other) in arms.iter().enumerate() {
                            if j != arm {
                                loss += bayes::compare(other, chosen)?.expected_loss;
                            }
                        }
                        reason.push_str(&format!(", expected loss {}", number(loss)));
                    }
                    format!("{reason}; {evidence}")
                }
            };
            Some(Verdict {
                winner: Some(key(arm)),
                reason,
            })
        }
        Decision::NoDifference => {
            let planned = conclude::planned_per_arm(&plan, arms)?.unwrap_or(0);
            let reason = match definition.method {
                Method::Frequentist | Method::Bayesian => format!(
                    "no difference at the planned {} per variant",
                    thousands(planned)
                ),
                Method::Bandit => {
                    let total: u64 = arms.iter().map(|a| a.visitors).fold(0, u64::saturating_add);
                    format!(
                        "no variant stood out after {} visitors ({} × the planned {} per variant \
                         for each of {} variants)",
                        thousands(total),
                        conclude::BANDIT_CAP_FACTOR,
                        thousands(planned),
                        arms.len()
                    )
                }
            };
            Some(Verdict {
                winner: None,
                reason,
            })
        }
    })
}

/// The always-valid evidence behind a winner, as the guard of [`conclude::decide`] computes
/// it: "b beats a: always-valid p 0.003 ≤ 0.05", or for the control the largest p-value of
/// its comparisons. `keys` are the variant keys, the control first.
fn sequential_evidence(
    plan: &Plan,
    arms: &[Arm],
    keys: &[String],
    winner: usize,
    threshold: f64,
) -> String {
    let Some(control) = arms.first().copied() else {
        return String::new();
    };
    let tau = conclude::mixture_sd(plan, arms);
    let p = |variant: Arm| {
        tau.and_then(|tau| conclude::always_valid(control, variant, tau))
            .map_or(1.0, |s| s.p_value)
    };
    let rate = |a: Arm| {
        if a.visitors == 0 {
            0.0
        } else {
            a.conversions as f64 / a.visitors as f64
        }
    };
    if winner == 0 {
        let worst = arms.iter().skip(1).map(|&a| p(a)).fold(0.0, f64::max);
        format!(
            "{} beats every variant: always-valid p at most {} ≤ {} (rate {} over {} visitors)",
            keys[0],
            number(worst),
            number(threshold),
            percent(rate(control)),
            thousands(control.visitors)
        )
    } else {
        let variant = arms[winner];
        format!(
            "{} beats {}: always-valid p {} ≤ {} (rate {} vs {}, {} and {} visitors)",
            keys[winner],
            keys[0],
            number(p(variant)),
            number(threshold),
            percent(rate(variant)),
            percent(rate(control)),
            thousands(variant.visitors),
            thousands(control.visitors)
        )
    }
}

/// The fixed-horizon evidence behind a frequentist winner at the planned size: "b beats a at
/// the planned 31,234 per variant: z 2.83, p 0.0046 < 0.045", or for the control the largest
/// p-value of its comparisons.
fn fixed_evidence(
    plan: &Plan,
    arms: &[Arm],
    keys: &[String],
    winner: usize,
    threshold: f64,
) -> String {
    let Some(control) = arms.first().copied() else {
        return String::new();
    };
    let z = |variant: Arm| {
        frequentist::Arm::new(control.conversions, control.visitors)
            .ok()
            .zip(frequentist::Arm::new(variant.conversions, variant.visitors).ok())
            .and_then(|(a, b)| frequentist::z_test(a, b))
    };
    let planned = conclude::planned_per_arm(plan, arms)
        .ok()
        .flatten()
        .unwrap_or(0);
    if winner == 0 {
        let worst = arms
            .iter()
            .skip(1)
            .map(|&a| z(a).map_or(1.0, |t| t.p_value))
            .fold(0.0, f64::max);
        format!(
            "{} beats every variant at the planned {} per variant: z-test p at most {} < {}",
            keys[0],
            thousands(planned),
            number(worst),
            number(threshold)
        )
    } else {
        let (zv, p) = z(arms[winner]).map_or((0.0, 1.0), |t| (t.z, t.p_value));
        format!(
            "{} beats {} at the planned {} per variant: z {:.2}, p {} < {}",
            keys[winner],
            keys[0],
            thousands(planned),
            zv,
            number(p),
            number(threshold)
        )
    }
}

/// A probability or p-value for people: three decimals, or two significant digits below 0.001.
fn number(x: f64) -> String {
    if x != 0.0 && x.abs() < 0.001 {
        format!("{x:.1e}")
    } else {
        let s = format!("{x:.3}");
        let s = s.trim_end_matches('0');
        s.trim_end_matches('.').to_owned()
    }
}

fn percent(rate: f64) -> String {
    format!("{:.2} %", rate * 100.0)
}

/// 31234 as "31,234".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abtest::{Surface, Variant};

    fn definition(method: Method, weights: [u32; 2]) -> TestDefinition {
        TestDefinition {
            name: "Layouts".into(),
            surface: Surface::Checkout,
            target: None,
            variants: vec![
                Variant {
                    key: "a".into(),
                    weight: weights[0],
                    serves: "two_step".into(),
                },
                Variant {
                    key: "b".into(),
                    weight: weights[1],
                    serves: "one_step".into(),
                },
            ],
            method,
            mde_relative: 0.5,
            power_target: 0.8,
            significance: 0.95,
            baseline_rate: None,
        }
    }

    fn arm(conversions: u64, visitors: u64) -> Arm {
        Arm {
            conversions,
            visitors,
        }
    }

    #[test]
    fn a_lopsided_split_raises_the_alert_but_not_a_bandit_or_a_tiny_sample() {
        let hashed = definition(Method::Frequentist, [1, 1]);
        let alert = srm_alert(&hashed, &[300, 100], 0.02).map(|s| s.df);
        assert_eq!(alert, Some(1));
        assert_eq!(srm_alert(&hashed, &[205, 195], 0.02), None);
        // Weights 3:1 expect that split.
        assert_eq!(
            srm_alert(&definition(Method::Bayesian, [3, 1]), &[300, 100], 0.02),
            None
        );
        assert_eq!(
            srm_alert(&definition(Method::Bandit, [1, 1]), &[300, 100], 0.02),
            None
        );
        // 9 visitors: an expected 4.5 per variant is too few to judge.
        assert_eq!(srm_alert(&hashed, &[9, 0], 0.02), None);
    }

    #[test]
    fn a_clear_winner_is_named_with_its_evidence() {
        let arms = [arm(4, 200), arm(40, 200)];
        // A +500 % effect planned for: the mixture's spread is 0.1 at the control's 2 %.
        let planned_for = |method| TestDefinition {
            mde_relative: 5.0,
            ..definition(method, [1, 1])
        };
        let frequentist = verdict(&planned_for(Method::Frequentist), &arms);
        let Ok(Some(v)) = frequentist else {
            panic!("no verdict: {frequentist:?}");
        };
        assert_eq!(v.winner.as_deref(), Some("b"));
        // 200 visitors per arm are past the planned size: the z-test decided, at 0.9 α.
        assert!(
            v.reason.starts_with("b beats a at the planned "),
            "{}",
            v.reason
        );
        assert!(v.reason.contains(" per variant: z 5."), "{}", v.reason);
        assert!(v.reason.ends_with(" < 0.045"), "{}", v.reason);
        // Before the planned size only the always-valid p at 0.1 α concludes.
        // (n* is 1,471 per variant at the control's 5 % and +50 %.)
        let early = [arm(50, 1_000), arm(100, 1_000)];
        let Ok(Some(v)) = verdict(&definition(Method::Frequentist, [1, 1]), &early) else {
            panic!("no early verdict");
        };
        assert!(
            v.reason.starts_with("b beats a: always-valid p "),
            "{}",
            v.reason
        );
        assert!(
            v.reason.contains("≤ 0.005 (rate 10.00 % vs 5.00 %"),
            "{}",
            v.reason
        );
        let bayesian = verdict(&planned_for(Method::Bayesian), &arms);
        let Ok(Some(v)) = bayesian else {
            panic!("no verdict: {bayesian:?}");
        };
        assert_eq!(v.winner.as_deref(), Some("b"));
        assert!(
            v.reason
                .starts_with("b is best with probability 1 ≥ 0.95, expected loss "),
            "{}",
            v.reason
        );
    }

    #[test]
    fn equal_arms_continue_then_end_without_a_winner_at_the_planned_size() {
        let def = TestDefinition {
            baseline_rate: Some(0.1),
            ..definition(Method::Frequentist, [1, 1])
        };
        assert_eq!(verdict(&def, &[arm(20, 200), arm(20, 200)]), Ok(None));
        let planned =
            conclude::planned_per_arm(&plan_of(&def), &[arm(100, 1_000), arm(100, 1_000)])
                .ok()
                .flatten()
                .unwrap_or(0);
        assert!(planned > 0 && planned < 100_000, "{planned}");
        let at_plan = [arm(planned / 10, planned), arm(planned / 10, planned)];
        let v = verdict(&def, &at_plan);
        assert_eq!(
            v,
            Ok(Some(Verdict {
                winner: None,
                reason: format!(
                    "no difference at the planned {} per variant",
                    thousands(planned)
                ),
            }))
        );
    }

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(31_234), "31,234");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(0.0031), "0.003");
        assert_eq!(number(0.00012), "1.2e-4");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.0), "0");
    }
}
