//! The `Order` aggregate: what OCart knows of one store order, from the store-neutral order API
//! or WooCommerce's order webhooks, and which cart it converted. Its id derives from the
//! store's order id ([`order_id_for`]), so the API and the webhook name the same order and a
//! replayed delivery lands on the aggregate that already has it: recording what is already
//! recorded emits nothing.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Currency;

/// The aggregate id of the store's order `order_id`: a UUID (version 8) from its sha256.
pub fn order_id_for(order_id: &str) -> Uuid {
    let digest = Sha256::digest(format!("ocart:order:{order_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// How an order was tied to a cart, in CartBay's priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// The order names the cart's checkout session (or the cart id).
    Session,
    /// The order carries a restore token from a recovery message.
    RestoreToken,
    /// The order used a recovery coupon issued for the cart.
    Coupon,
    /// The buyer's email (subject hash) matches a cart within the look-back window.
    Email,
}

impl MatchedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::RestoreToken => "restore_token",
            Self::Coupon => "coupon",
            Self::Email => "email",
        }
    }
}

/// What the order did to the cart it matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributionOutcome {
    /// Placed after the cart was abandoned: a recovered cart.
    Recovered,
    /// Placed before the cart was abandoned: a sale, not a recovery.
    CompletedBeforeAbandonment,
}

impl AttributionOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recovered => "recovered",
            Self::CompletedBeforeAbandonment => "completed_before_abandonment",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    pub cart_id: String,
    pub matched_by: MatchedBy,
    pub outcome: AttributionOutcome,
}

/// An order as the edge validated it. No personal data: the buyer's email is kept only as its
/// subject hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderFacts {
    /// The store's order id.
    pub order_id: String,
    /// The store's status, lower case (`processing`, `on-hold`, …).
    pub status: String,
    /// Paid by OCart's rule: processing or completed, or on-hold/pending through an offline
    /// gateway (`recovery.offline_gateways`).
    pub paid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<String>,
    pub currency: Currency,
    /// The order total in minor units.
    pub total: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_hash: Option<String>,
    pub placed_at: DateTime<Utc>,
    /// Where the signal came from: `api` or `woocommerce`.
    pub source: String,
    /// Coupon codes applied to the order, upper case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coupon_codes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    /// Records the order as the store reports it now. `attribution` is the cart it converted
    /// (decided by the caller, who can read the carts), once it is paid.
    Record {
        facts: Box<OrderFacts>,
        attribution: Option<Attribution>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OrderEvent {
    #[serde(rename = "order/recorded")]
    Recorded {
        facts: Box<OrderFacts>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribution: Option<Attribution>,
        at: DateTime<Utc>,
    },
    /// The store reported a new status (or total) for a known order.
    #[serde(rename = "order/status_changed")]
    StatusChanged {
        status: String,
        paid: bool,
        total: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attribution: Option<Attribution>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Recorded { .. } => "order/recorded",
            Self::StatusChanged { .. } => "order/status_changed",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("order {0} is recorded in {1}; a later signal cannot change its currency")]
    CurrencyChanged(String, String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    facts: Option<OrderFacts>,
    attribution: Option<Attribution>,
}

impl Order {
    pub fn facts(&self) -> Option<&OrderFacts> {
        self.facts.as_ref()
    }
    pub fn attribution(&self) -> Option<&Attribution> {
        self.attribution.as_ref()
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let OrderCommand::Record {
            facts,
            attribution,
            at,
        } = command;
        let event = match &self.facts {
            None => Some(OrderEvent::Recorded {
                facts,
                attribution,
                at,
            }),
            Some(known) => {
                if known.currency != facts.currency {
                    return Err(OrderError::CurrencyChanged(
                        known.order_id.clone(),
                        known.currency.as_str().to_owned(),
                    ));
                }
                // Attribution is decided once; a replay or a later status never moves it.
                let attribution = attribution.filter(|_| self.attribution.is_none());
                let changed = known.status != facts.status
                    || known.paid != facts.paid
                    || known.total != facts.total;
                (changed || attribution.is_some()).then(|| OrderEvent::StatusChanged {
                    status: facts.status.clone(),
                    paid: facts.paid,
                    total: facts.total,
                    attribution,
                    at,
                })
            }
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrderEvent::Recorded {
                facts, attribution, ..
            } => {
                self.facts = Some(*facts);
                self.attribution = attribution;
            }
            OrderEvent::StatusChanged {
                status,
                paid,
                total,
                attribution,
                ..
            } => {
                if let Some(facts) = &mut self.facts {
                    facts.status = status;
                    facts.paid = paid;
                    facts.total = total;
                }
                if attribution.is_some() {
                    self.attribution = attribution;
                }
            }
        }
    }
}

/// Whether an order in `status` paid through `payment_method` counts as paid: processing or
/// completed always; on-hold and pending only through an offline gateway (bank transfer,
/// cheque, cash on delivery), whose buyer has ordered and must not be chased.
pub fn is_paid(status: &str, payment_method: Option<&str>, offline_gateways: &[String]) -> bool {
    match status {
        "processing" | "completed" => true,
        "on-hold" | "pending" => {
            payment_method.is_some_and(|m| offline_gateways.iter().any(|g| g == m))
        }
        _ => false,
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

    fn facts(status: &str, paid: bool) -> Box<OrderFacts> {
        Box::new(OrderFacts {
            order_id: "1001".into(),
            status: status.into(),
            paid,
            payment_method: Some("bacs".into()),
            currency: Currency::parse("c", "EUR").unwrap(),
            total: 3980,
            email_hash: Some("h".into()),
            placed_at: at(),
            source: "woocommerce".into(),
            coupon_codes: vec![],
        })
    }

    fn attribution() -> Attribution {
        Attribution {
            cart_id: "c1".into(),
            matched_by: MatchedBy::Session,
            outcome: AttributionOutcome::Recovered,
        }
    }

    fn recorded() -> OrderEvent {
        OrderEvent::Recorded {
            facts: facts("on-hold", true),
            attribution: Some(attribution()),
            at: at(),
        }
    }

    #[test]
    fn a_replayed_order_emits_nothing() {
        TestFramework::<Order>::with(())
            .given(vec![recorded()])
            .when(OrderCommand::Record {
                facts: facts("on-hold", true),
                attribution: Some(attribution()),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_new_status_is_recorded_and_the_attribution_stays() {
        TestFramework::<Order>::with(())
            .given(vec![recorded()])
            .when(OrderCommand::Record {
                facts: facts("completed", true),
                attribution: Some(Attribution {
                    cart_id: "other".into(),
                    ..attribution()
                }),
                at: at(),
            })
            .then_expect_events(vec![OrderEvent::StatusChanged {
                status: "completed".into(),
                paid: true,
                total: 3980,
                attribution: None,
                at: at(),
            }]);
    }

    #[test]
    fn on_hold_counts_as_paid_only_through_an_offline_gateway() {
        let offline = vec!["bacs".to_owned(), "cod".to_owned()];
        assert!(is_paid("processing", Some("stripe"), &offline));
        assert!(is_paid("on-hold", Some("bacs"), &offline));
        assert!(is_paid("pending", Some("cod"), &offline));
        assert!(!is_paid("on-hold", Some("stripe"), &offline));
        assert!(!is_paid("pending", None, &offline));
        assert!(!is_paid("failed", Some("bacs"), &offline));
        assert!(!is_paid("cancelled", Some("bacs"), &offline));
    }

    #[test]
    fn order_ids_are_stable() {
        assert_eq!(order_id_for("1001"), order_id_for("1001"));
        assert_ne!(order_id_for("1001"), order_id_for("1002"));
    }
}
