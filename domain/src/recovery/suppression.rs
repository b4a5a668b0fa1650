//! The `Suppression` aggregate: one recipient (id = the subject hash of an email or phone)
//! that must not be messaged. Reasons follow the reference: bounce, complaint, unsubscribe,
//! manual, winback_failed. Suppressing twice changes nothing, so a replayed webhook or a second
//! click records nothing new.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{Channel, DeliveryKind, DeliveryReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    Bounce,
    Complaint,
    Unsubscribe,
    Manual,
    WinbackFailed,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bounce => "bounce",
            Self::Complaint => "complaint",
            Self::Unsubscribe => "unsubscribe",
            Self::Manual => "manual",
            Self::WinbackFailed => "winback_failed",
        }
    }
}

/// Whether a provider's report about a sent message suppresses its recipient, and why: a hard
/// bounce (the address does not exist) and a spam complaint do; a soft bounce, a delivery and
/// an open do not.
pub fn report_suppresses(report: &DeliveryReport) -> Option<SuppressionReason> {
    match report.kind {
        DeliveryKind::Bounced if report.hard => Some(SuppressionReason::Bounce),
        DeliveryKind::Complained => Some(SuppressionReason::Complaint),
        DeliveryKind::Bounced | DeliveryKind::Delivered | DeliveryKind::Opened => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SuppressionCommand {
    Suppress {
        reason: SuppressionReason,
        channel: Option<Channel>,
        /// What caused it: a message key, a webhook id, `admin`.
        source: Option<String>,
        at: DateTime<Utc>,
    },
    Lift {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SuppressionEvent {
    /// The recipient unsubscribed (a link, the RFC 8058 one-click POST, a STOP reply).
    #[serde(rename = "recovery/unsubscribed")]
    Unsubscribed {
        channel: Option<Channel>,
        source: Option<String>,
        at: DateTime<Utc>,
    },
    /// Suppressed for another reason (bounce, complaint, manual, winback_failed).
    #[serde(rename = "recovery/suppressed")]
    Suppressed {
        reason: SuppressionReason,
        channel: Option<Channel>,
        source: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/suppression_lifted")]
    Lifted { at: DateTime<Utc> },
}

impl DomainEvent for SuppressionEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Unsubscribed { .. } => "recovery/unsubscribed",
            Self::Suppressed { .. } => "recovery/suppressed",
            Self::Lifted { .. } => "recovery/suppression_lifted",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SuppressionError {
    #[error("the recipient is not suppressed")]
    NotSuppressed,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    reason: Option<SuppressionReason>,
}

impl Suppression {
    pub fn reason(&self) -> Option<SuppressionReason> {
        self.reason
    }
}

impl Aggregate for Suppression {
    const TYPE: &'static str = "suppression";
    type Command = SuppressionCommand;
    type Event = SuppressionEvent;
    type Error = SuppressionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            SuppressionCommand::Suppress {
                reason,
                channel,
                source,
                at,
            } => {
                if self.reason.is_some() {
                    return Ok(());
                }
                if reason == SuppressionReason::Unsubscribe {
                    SuppressionEvent::Unsubscribed {
                        channel,
                        source,
                        at,
                    }
                } else {
                    SuppressionEvent::Suppressed {
                        reason,
                        channel,
                        source,
                        at,
                    }
                }
            }
            SuppressionCommand::Lift { at } => {
                if self.reason.is_none() {
                    return Err(SuppressionError::NotSuppressed);
                }
                SuppressionEvent::Lifted { at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.reason = match event {
            SuppressionEvent::Unsubscribed { .. } => Some(SuppressionReason::Unsubscribe),
            SuppressionEvent::Suppressed { reason, .. } => Some(reason),
            SuppressionEvent::Lifted { .. } => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn which_reports_suppress_their_recipient() {
        let report = |kind, hard| DeliveryReport {
            kind,
            hard,
            provider_id: None,
            detail: None,
        };
        let table = [
            (
                "a hard bounce suppresses for bounce",
                report(DeliveryKind::Bounced, true),
                Some(SuppressionReason::Bounce),
            ),
            (
                "a soft bounce suppresses nothing",
                report(DeliveryKind::Bounced, false),
                None,
            ),
            (
                "a complaint suppresses for complaint",
                report(DeliveryKind::Complained, false),
                Some(SuppressionReason::Complaint),
            ),
            (
                "a delivery suppresses nothing",
                report(DeliveryKind::Delivered, false),
                None,
            ),
            (
                "an open suppresses nothing",
                report(DeliveryKind::Opened, false),
                None,
            ),
        ];
        for (rule, report, expected) in table {
            assert_eq!(report_suppresses(&report), expected, "{rule}");
        }
    }

    #[test]
    fn unsubscribing_twice_records_once_and_lifting_needs_a_suppression() {
        let unsubscribe = SuppressionCommand::Suppress {
            reason: SuppressionReason::Unsubscribe,
            channel: Some(Channel::Email),
            source: Some("run.s1.a1".into()),
            at: at(),
        };
        let unsubscribed = SuppressionEvent::Unsubscribed {
            channel: Some(Channel::Email),
            source: Some("run.s1.a1".into()),
            at: at(),
        };
        TestFramework::<Suppression>::with(())
            .given_no_previous_events()
            .when(unsubscribe.clone())
            .then_expect_events(vec![unsubscribed.clone()]);
        TestFramework::<Suppression>::with(())
            .given(vec![unsubscribed])
            .when(unsubscribe)
            .then_expect_events(vec![]);
        TestFramework::<Suppression>::with(())
            .given_no_previous_events()
            .when(SuppressionCommand::Lift { at: at() })
            .then_expect_error(SuppressionError::NotSuppressed);
    }
}
