//! The `UpsellView` aggregate: one upsell or downsell step of one parent order shown to the
//! shopper on the hosted offer page (id: [`view_id`], from the parent order, the funnel and the
//! step). The first rendering of the offer is recorded as `upsell/shown`; a reload, another
//! token of the same step or a second tab records nothing. The funnel report counts these as
//! the step's visits.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::UpsellKind;

/// The view of one offer step of one parent order: `view_` and 32 hex digits of
/// sha256(parent order, funnel, step), each part length-prefixed. Never an acceptance's id.
pub fn view_id(parent_order_id: &str, funnel_id: &str, step: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"upsell-view");
    for part in [parent_order_id, funnel_id, step] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    format!("view_{}", hex::encode(&digest[..16]))
}

/// What the page showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShownStep {
    /// The acceptance this step's decision goes to.
    pub acceptance_id: String,
    pub offer_id: String,
    pub kind: UpsellKind,
    pub funnel_id: String,
    pub step: String,
    pub parent_order_id: String,
    /// The one-click token the page was opened with.
    pub jti: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ViewCommand {
    /// The hosted page rendered the offer (the step undecided, the token live).
    Show {
        step: Box<ShownStep>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ViewEvent {
    #[serde(rename = "upsell/shown")]
    Shown {
        #[serde(flatten)]
        step: Box<ShownStep>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for ViewEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Shown { .. } => "upsell/shown",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

/// Showing cannot be refused; the type is the aggregate's contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {}

/// Whether the step was shown, and first with which token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpsellView {
    shown: Option<ShownStep>,
}

impl UpsellView {
    /// The step as first shown.
    pub fn shown(&self) -> Option<&ShownStep> {
        self.shown.as_ref()
    }
}

impl Aggregate for UpsellView {
    const TYPE: &'static str = "upsell_view";
    type Command = ViewCommand;
    type Event = ViewEvent;
    type Error = ViewError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            ViewCommand::Show { step, at } => {
                if self.shown.is_none() {
                    sink.write(ViewEvent::Shown { step, at }, self).await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ViewEvent::Shown { step, .. } => self.shown = Some(*step),
        }
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

    fn step(jti: &str) -> Box<ShownStep> {
        Box::new(ShownStep {
            acceptance_id: super::super::acceptance_id("1001", "main", "upsell"),
            offer_id: "o1".into(),
            kind: UpsellKind::Upsell,
            funnel_id: "main".into(),
            step: "upsell".into(),
            parent_order_id: "1001".into(),
            jti: jti.into(),
        })
    }

    #[test]
    fn the_id_is_one_per_order_funnel_and_step_and_never_an_acceptance() {
        assert_eq!(view_id("1", "f", "s"), view_id("1", "f", "s"));
        assert_ne!(view_id("1", "f", "s"), view_id("1", "f", "t"));
        assert_ne!(view_id("1f", "", "s"), view_id("1", "f", "s"));
        assert_ne!(
            &view_id("1", "f", "s")[5..],
            &super::super::acceptance_id("1", "f", "s")[4..]
        );
        assert!(view_id("1", "f", "s").starts_with("view_"));
        assert_eq!(view_id("1", "f", "s").len(), 37);
    }

    #[test]
    fn a_step_is_shown_once_whatever_the_token() {
        let shown = ViewEvent::Shown {
            step: step("j1"),
            at: at(),
        };
        TestFramework::<UpsellView>::with(())
            .given_no_previous_events()
            .when(ViewCommand::Show {
                step: step("j1"),
                at: at(),
            })
            .then_expect_events(vec![shown.clone()]);
        for jti in ["j1", "j2"] {
            TestFramework::<UpsellView>::with(())
                .given(vec![shown.clone()])
                .when(ViewCommand::Show {
                    step: step(jti),
                    at: at(),
                })
                .then_expect_events(vec![]);
        }
    }

    #[test]
    fn the_event_carries_the_step_flat() {
        let event = ViewEvent::Shown {
            step: step("j1"),
            at: at(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "upsell/shown");
        assert_eq!(json["data"]["funnel_id"], "main");
        assert_eq!(json["data"]["kind"], "upsell");
        assert_eq!(json["data"]["jti"], "j1");
        let back: ViewEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
