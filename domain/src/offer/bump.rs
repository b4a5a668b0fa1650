//! The `BumpDecision` aggregate: one offer shown to one cart (id: [`bump_decision_id`]) and
//! what the shopper did with it. Showing, accepting and declining are each recorded once; a
//! repeat records nothing and answers the line recorded first. A shopper who declined may
//! accept after all, and one who accepted may remove the bump (recorded as declined).

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::values::ProductId;

/// The id of the decision about `offer_id` in `cart_id`: sha256 hex of both.
pub fn bump_decision_id(offer_id: &str, cart_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(offer_id.as_bytes());
    hash.update([0]);
    hash.update(cart_id.as_bytes());
    hex::encode(hash.finalize())
}

/// The line a bump adds to the order, as quoted to the shopper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BumpLine {
    pub offer_id: String,
    pub cart_id: String,
    /// What the shopper pays for the bump, in minor units.
    pub price: i64,
    pub currency: String,
    pub quantity: u32,
    pub product_id: ProductId,
}

/// What the shopper did (or was shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BumpAnswer {
    Accepted,
    Declined,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BumpCommand {
    /// The bump was shown to the cart at this price.
    Show { line: BumpLine, at: DateTime<Utc> },
    /// The shopper took the bump.
    Accept { line: BumpLine, at: DateTime<Utc> },
    /// The shopper declined (or removed) the bump.
    Decline { line: BumpLine, at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum BumpEvent {
    #[serde(rename = "bump/shown")]
    Shown {
        #[serde(flatten)]
        line: BumpLine,
        at: DateTime<Utc>,
    },
    #[serde(rename = "bump/accepted")]
    Accepted {
        #[serde(flatten)]
        line: BumpLine,
        at: DateTime<Utc>,
    },
    #[serde(rename = "bump/declined")]
    Declined {
        #[serde(flatten)]
        line: BumpLine,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for BumpEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Shown { .. } => "bump/shown",
            Self::Accepted { .. } => "bump/accepted",
            Self::Declined { .. } => "bump/declined",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

/// A decision cannot be refused; the type is the aggregate's contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BumpError {}

/// One offer in one cart: whether it was shown, and the shopper's latest answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BumpDecision {
    shown: Option<BumpLine>,
    answer: Option<(BumpAnswer, BumpLine)>,
}

impl BumpDecision {
    /// The line recorded when the bump was first shown.
    pub fn shown(&self) -> Option<&BumpLine> {
        self.shown.as_ref()
    }

    /// The shopper's latest answer and the line it recorded.
    pub fn answer(&self) -> Option<(BumpAnswer, &BumpLine)> {
        self.answer.as_ref().map(|(a, l)| (*a, l))
    }
}

impl Aggregate for BumpDecision {
    const TYPE: &'static str = "bump";
    type Command = BumpCommand;
    type Event = BumpEvent;
    type Error = BumpError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let current = self.answer.as_ref().map(|(a, _)| *a);
        let event = match command {
            BumpCommand::Show { line, at } => {
                if self.shown.is_some() {
                    return Ok(());
                }
                BumpEvent::Shown { line, at }
            }
            BumpCommand::Accept { line, at } => {
                if current == Some(BumpAnswer::Accepted) {
                    return Ok(());
                }
                BumpEvent::Accepted { line, at }
            }
            BumpCommand::Decline { line, at } => {
                if current == Some(BumpAnswer::Declined) {
                    return Ok(());
                }
                BumpEvent::Declined { line, at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BumpEvent::Shown { line, .. } => self.shown = Some(line),
            BumpEvent::Accepted { line, .. } => self.answer = Some((BumpAnswer::Accepted, line)),
            BumpEvent::Declined { line, .. } => self.answer = Some((BumpAnswer::Declined, line)),
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

    fn line(price: i64) -> BumpLine {
        BumpLine {
            offer_id: "o1".into(),
            cart_id: "c1".into(),
            price,
            currency: "EUR".into(),
            quantity: 1,
            product_id: ProductId::Number(7),
        }
    }

    #[test]
    fn the_id_is_one_per_offer_and_cart() {
        assert_eq!(bump_decision_id("o1", "c1"), bump_decision_id("o1", "c1"));
        assert_ne!(bump_decision_id("o1", "c1"), bump_decision_id("o1", "c2"));
        assert_ne!(bump_decision_id("o1c", "1"), bump_decision_id("o1", "c1"));
    }

    #[test]
    fn each_answer_is_recorded_once_and_a_shopper_may_change_their_mind() {
        let shown = BumpEvent::Shown {
            line: line(2400),
            at: at(),
        };
        let accepted = BumpEvent::Accepted {
            line: line(2400),
            at: at(),
        };
        let declined = BumpEvent::Declined {
            line: line(2400),
            at: at(),
        };
        let cases: Vec<(&str, Vec<BumpEvent>, BumpCommand, Vec<BumpEvent>)> = vec![
            (
                "showing records shown",
                vec![],
                BumpCommand::Show {
                    line: line(2400),
                    at: at(),
                },
                vec![shown.clone()],
            ),
            (
                "showing again records nothing",
                vec![shown.clone()],
                BumpCommand::Show {
                    line: line(2400),
                    at: at(),
                },
                vec![],
            ),
            (
                "accepting records accepted",
                vec![shown.clone()],
                BumpCommand::Accept {
                    line: line(2400),
                    at: at(),
                },
                vec![accepted.clone()],
            ),
            (
                "accepting again records nothing",
                vec![shown.clone(), accepted.clone()],
                BumpCommand::Accept {
                    line: line(9999),
                    at: at(),
                },
                vec![],
            ),
            (
                "declining after accepting records the removal",
                vec![accepted.clone()],
                BumpCommand::Decline {
                    line: line(2400),
                    at: at(),
                },
                vec![declined.clone()],
            ),
            (
                "declining twice records once",
                vec![declined.clone()],
                BumpCommand::Decline {
                    line: line(2400),
                    at: at(),
                },
                vec![],
            ),
            (
                "accepting after declining is allowed",
                vec![declined.clone()],
                BumpCommand::Accept {
                    line: line(2400),
                    at: at(),
                },
                vec![accepted.clone()],
            ),
        ];
        for (_name, given, when, then) in cases {
            TestFramework::<BumpDecision>::with(())
                .given(given)
                .when(when)
                .then_expect_events(then);
        }
    }

    #[test]
    fn events_carry_the_line_flat() {
        let event = BumpEvent::Accepted {
            line: line(2400),
            at: at(),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "bump/accepted");
        assert_eq!(json["data"]["offer_id"], "o1");
        assert_eq!(json["data"]["price"], 2400);
        let back: BumpEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}
