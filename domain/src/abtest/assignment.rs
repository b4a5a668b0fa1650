//! The `Assignment` aggregate: one unit's variant in one test. Its stream is named by
//! (test, unit) ([`assignment_id`]), so a unit is assigned once whatever the concurrency; it
//! then records the unit's first conversion (with its revenue) and, past the retention
//! window, its pruning.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Surface;
use crate::values::Currency;

/// The aggregate type of assignments in the log.
pub const ASSIGNMENT_TYPE: &str = "test_assignment";
/// The longest unit id (a cart id, a recovery run id).
pub const MAX_UNIT_LEN: usize = 128;

/// The stream of `unit`'s assignment in test `test_id`: `asg_` and 32 hex digits of
/// sha256(test, unit), each part length-prefixed.
pub fn assignment_id(test_id: &str, unit: &str) -> String {
    let digest = digest(b"assignment", test_id, unit);
    format!("asg_{}", hex::encode(&digest[..16]))
}

fn digest(domain: &[u8], test_id: &str, unit: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in [domain, test_id.as_bytes(), unit.as_bytes()] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// The variant a hash-split test (frequentist or Bayesian) gives `unit`: the first 64 bits of
/// sha256("split", test, unit) as a point u in [0, 1), and the variant whose share of the
/// cumulative weights holds u (u · Σw computed exactly in 128 bits, so every weight gets its
/// share to within 2⁻⁶⁴). The same (test, unit, weights) always give the same variant. `None`
/// when there are no weights or they sum to 0.
pub fn split(test_id: &str, unit: &str, weights: &[u32]) -> Option<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return None;
    }
    let digest = digest(b"split", test_id, unit);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let point = u64::from_be_bytes(first);
    // In [0, total): floor(point · total / 2⁶⁴).
    let slot = ((u128::from(point) * u128::from(total)) >> 64) as u64;
    let mut upto = 0u64;
    for (i, &w) in weights.iter().enumerate() {
        upto += u64::from(w);
        if slot < upto {
            return Some(i);
        }
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssignmentCommand {
    /// Assigns `unit` to `variant` unless it is assigned already (then nothing happens and the
    /// aggregate holds the variant it has).
    Assign {
        test_id: String,
        unit: String,
        surface: Surface,
        variant: String,
        at: DateTime<Utc>,
    },
    /// The unit's success on the test's surface (`reference`: the order or acceptance), with
    /// its revenue in minor units. Only the first is recorded.
    Convert {
        reference: String,
        revenue_minor: i64,
        currency: Option<Currency>,
        at: DateTime<Utc>,
    },
    /// Drops the assignment past the retention window.
    Prune { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum AssignmentEvent {
    #[serde(rename = "test/assigned")]
    Assigned {
        test_id: String,
        /// The cart id (checkout, bump, upsell) or the recovery run (recovery surfaces).
        unit: String,
        surface: Surface,
        variant: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "test/converted")]
    Converted {
        test_id: String,
        unit: String,
        variant: String,
        reference: String,
        revenue_minor: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        currency: Option<Currency>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "test/assignment_pruned")]
    Pruned {
        test_id: String,
        unit: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for AssignmentEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Assigned { .. } => "test/assigned",
            Self::Converted { .. } => "test/converted",
            Self::Pruned { .. } => "test/assignment_pruned",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("the unit is not assigned in this test")]
    NotAssigned,
    #[error("the revenue must be from 0 to the largest amount OCart takes")]
    BadRevenue,
    #[error("the unit id must be 1 to {MAX_UNIT_LEN} characters")]
    BadUnit,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    test_id: Option<String>,
    unit: Option<String>,
    variant: Option<String>,
    assigned_at: Option<DateTime<Utc>>,
    converted: bool,
}

impl Assignment {
    /// The variant the unit has; `None` before it is assigned and after it is pruned.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    pub fn assigned_at(&self) -> Option<DateTime<Utc>> {
        self.assigned_at
    }

    pub fn converted(&self) -> bool {
        self.converted
    }
}

impl Aggregate for Assignment {
    const TYPE: &'static str = ASSIGNMENT_TYPE;
    type Command = AssignmentCommand;
    type Event = AssignmentEvent;
    type Error = AssignmentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            AssignmentCommand::Assign {
                test_id,
                unit,
                surface,
                variant,
                at,
            } => {
                if self.variant.is_some() {
                    return Ok(());
                }
                if unit.is_empty() || unit.len() > MAX_UNIT_LEN {
                    return Err(AssignmentError::BadUnit);
                }
                AssignmentEvent::Assigned {
                    test_id,
                    unit,
                    surface,
                    variant,
                    at,
                }
            }
            AssignmentCommand::Convert {
                reference,
                revenue_minor,
                currency,
                at,
            } => {
                let (Some(test_id), Some(unit), Some(variant)) =
                    (&self.test_id, &self.unit, &self.variant)
                else {
                    return Err(AssignmentError::NotAssigned);
                };
                if !(0..=crate::MAX_AMOUNT).contains(&revenue_minor) {
                    return Err(AssignmentError::BadRevenue);
                }
                if self.converted {
                    return Ok(());
                }
                AssignmentEvent::Converted {
                    test_id: test_id.clone(),
                    unit: unit.clone(),
                    variant: variant.clone(),
                    reference,
                    revenue_minor,
                    currency,
                    at,
                }
            }
            AssignmentCommand::Prune { at } => {
                let (Some(test_id), Some(unit), Some(_)) =
                    (&self.test_id, &self.unit, &self.variant)
                else {
                    return Ok(());
                };
                AssignmentEvent::Pruned {
                    test_id: test_id.clone(),
                    unit: unit.clone(),
                    at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            AssignmentEvent::Assigned {
                test_id,
                unit,
                variant,
                at,
                ..
            } => {
                self.test_id = Some(test_id);
                self.unit = Some(unit);
                self.variant = Some(variant);
                self.assigned_at = Some(at);
                self.converted = false;
            }
            AssignmentEvent::Converted { .. } => self.converted = true,
            AssignmentEvent::Pruned { .. } => {
                self.variant = None;
                self.assigned_at = None;
                self.converted = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn assigned() -> AssignmentEvent {
        AssignmentEvent::Assigned {
            test_id: "t1".into(),
            unit: "cart-1".into(),
            surface: Surface::Checkout,
            variant: "b".into(),
            at: at(),
        }
    }

    fn assign(variant: &str) -> AssignmentCommand {
        AssignmentCommand::Assign {
            test_id: "t1".into(),
            unit: "cart-1".into(),
            surface: Surface::Checkout,
            variant: variant.into(),
            at: at(),
        }
    }

    #[test]
    fn a_unit_is_assigned_once() {
        TestFramework::<Assignment>::with(())
            .given_no_previous_events()
            .when(assign("b"))
            .then_expect_events(vec![assigned()]);
        TestFramework::<Assignment>::with(())
            .given(vec![assigned()])
            .when(assign("a"))
            .then_expect_events(vec![]);
    }

    #[test]
    fn only_the_first_conversion_counts_and_an_unassigned_unit_has_none() {
        let convert = |revenue_minor| AssignmentCommand::Convert {
            reference: "order-9".into(),
            revenue_minor,
            currency: None,
            at: at(),
        };
        TestFramework::<Assignment>::with(())
            .given_no_previous_events()
            .when(convert(100))
            .then_expect_error(AssignmentError::NotAssigned);
        let converted = AssignmentEvent::Converted {
            test_id: "t1".into(),
            unit: "cart-1".into(),
            variant: "b".into(),
            reference: "order-9".into(),
            revenue_minor: 100,
            currency: None,
            at: at(),
        };
        TestFramework::<Assignment>::with(())
            .given(vec![assigned()])
            .when(convert(100))
            .then_expect_events(vec![converted.clone()]);
        TestFramework::<Assignment>::with(())
            .given(vec![assigned(), converted])
            .when(convert(500))
            .then_expect_events(vec![]);
        TestFramework::<Assignment>::with(())
            .given(vec![assigned()])
            .when(convert(-1))
            .then_expect_error(AssignmentError::BadRevenue);
    }

    #[test]
    fn a_pruned_unit_can_be_assigned_again() {
        let pruned = AssignmentEvent::Pruned {
            test_id: "t1".into(),
            unit: "cart-1".into(),
            at: at(),
        };
        TestFramework::<Assignment>::with(())
            .given(vec![assigned(), pruned])
            .when(assign("a"))
            .then_expect_events(vec![AssignmentEvent::Assigned {
                test_id: "t1".into(),
                unit: "cart-1".into(),
                surface: Surface::Checkout,
                variant: "a".into(),
                at: at(),
            }]);
    }

    #[test]
    fn the_split_is_deterministic_and_follows_the_weights() {
        assert_eq!(split("t", "u", &[]), None);
        assert_eq!(split("t", "u", &[0, 0]), None);
        assert_eq!(split("t", "u", &[1, 1]), split("t", "u", &[1, 1]));
        assert_eq!(split("t", "u", &[0, 5]), Some(1));
        // 40,000 units over weights 1:3: the share of variant 1 within 5 standard errors.
        let n = 40_000u32;
        let ones = (0..n)
            .filter(|i| split("test-7", &format!("cart-{i}"), &[1, 3]) == Some(1))
            .count() as f64;
        let share = ones / f64::from(n);
        let se = (0.75f64 * 0.25 / f64::from(n)).sqrt();
        assert!((share - 0.75).abs() < 5.0 * se, "share {share}");
        // Another test splits the same units independently.
        let same = (0..n)
            .filter(|i| {
                let u = format!("cart-{i}");
                split("test-7", &u, &[1, 1]) == split("test-8", &u, &[1, 1])
            })
            .count() as f64;
        assert!((same / f64::from(n) - 0.5).abs() < 5.0 * (0.25f64 / f64::from(n)).sqrt());
    }

    #[test]
    fn assignment_ids_do_not_collide_on_concatenation() {
        assert_ne!(assignment_id("ab", "c"), assignment_id("a", "bc"));
        assert!(assignment_id("t", "u").starts_with("asg_"));
        assert_eq!(assignment_id("t", "u").len(), 36);
    }
}
