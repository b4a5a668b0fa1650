//! The `Order` aggregate: what OCart knows of one store order, from the store-neutral order API
//! or WooCommerce's order webhooks, and which cart it converted. Its id derives from the
//! store's order id ([`order_id_for`](crate::order::order_id_for)), so the API and the webhook name the same order and a
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

/// How an order was tied to a cart. The variants are listed in [`MatchedBy::PRIORITY`] order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchedBy {
    /// The order names the checkout session token the cart was captured with.
    Session,
    /// The order carries a restore token from a recovery message.
    RestoreToken,
    /// The order names the OCart cart id (`ocart_cart` of a restore, kept by the store).
    CartId,
    /// The order used a recovery coupon issued for the cart.
    Coupon,
    /// The buyer's email (subject hash) matches a cart within the look-back window.
    Email,
}

impl MatchedBy {
    /// The order in which an order's evidence is tried; the first that names a cart wins.
    /// The checkout session is the cart's own key; a restore token proves the shopper came
    /// back through a recovery message; a bare cart id is what the store kept of a restore;
    /// a coupon ties the order to the cart it was issued for; the buyer's email is a guess
    /// within the look-back window.
    pub const PRIORITY: [MatchedBy; 5] = [
        Self::Session,
        Self::RestoreToken,
        Self::CartId,
        Self::Coupon,
        Self::Email,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::RestoreToken => "restore_token",
            Self::CartId => "cart_id",
            Self::Coupon => "coupon",
            Self::Email => "email",
        }
    }

    /// Of the pieces of evidence that each named a cart, the one that decides.
    pub fn strongest<T>(found: impl IntoIterator<Item = (MatchedBy, T)>) -> Option<(MatchedBy, T)> {
        found.into_iter().min_by_key(|(by, _)| {
            Self::PRIORITY
                .iter()
                .position(|p| p == by)
                .unwrap_or(usize::MAX)
        })
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
    /// When the store last modified the order (WooCommerce's `date_modified_gmt`), if it said.
    /// Signals are ordered by it ([`signal_applies`]): an older one changes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<DateTime<Utc>>,
    /// The saved payment the parent order was paid with, for one-click upsells (issue 11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentRef>,
    /// The order's lines that came from an OCart offer (a bump the shopper took, kept as line
    /// meta `_ocart_offer_id`): what counts the offer's revenue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offer_lines: Vec<OfferLine>,
}

/// A parent order's saved payment: which gateway, its customer and the saved payment method
/// (Stripe `cus_…` / `pm_…`, a PayPal vault id, a sandbox test method). Gateway-side ids only;
/// no card data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRef {
    /// `stripe`, `paypal` or `sandbox`.
    pub gateway: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    pub payment_method: String,
}

/// An order line that came from an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferLine {
    pub offer_id: String,
    pub product_id: crate::ProductId,
    pub quantity: u32,
    /// The line's total in minor units of the order's currency.
    pub total: i64,
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
        /// The store's modification time of this state, if it said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        modified_at: Option<DateTime<Utc>>,
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
                if !signal_applies(
                    (known.modified_at, known.paid),
                    (facts.modified_at, facts.paid),
                ) {
                    // A stale delivery (older than what is recorded) changes nothing.
                    return Ok(());
                }
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
                // A newer modification time is recorded even when nothing else changed, so a
                // delivery older than it is recognised as stale later.
                let newer = match (known.modified_at, facts.modified_at) {
                    (Some(k), Some(f)) => f > k,
                    (None, Some(_)) => true,
                    _ => false,
                };
                (changed || newer || attribution.is_some()).then(|| OrderEvent::StatusChanged {
                    status: facts.status.clone(),
                    paid: facts.paid,
                    total: facts.total,
                    attribution,
                    modified_at: facts.modified_at.filter(|_| newer),
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
                modified_at,
                ..
            } => {
                if let Some(facts) = &mut self.facts {
                    facts.status = status;
                    facts.paid = paid;
                    facts.total = total;
                    if modified_at.is_some() {
                        facts.modified_at = modified_at;
                    }
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

/// Whether a signal for an order OCart already knows may change it, by the store's
/// modification times (`known` and `incoming`, each with its paid state). Deliveries arrive out
/// of order (WooCommerce retries, parallel queues), so the newer modification wins; an older
/// one is stale and ignored. At equal times (the store's clock has whole seconds) a signal may
/// confirm or add payment but never takes it away. A signal without a time, or an order
/// recorded without one, falls back to arrival order.
pub fn signal_applies(
    known: (Option<DateTime<Utc>>, bool),
    incoming: (Option<DateTime<Utc>>, bool),
) -> bool {
    match (known, incoming) {
        ((Some(known_at), _), (Some(incoming_at), _)) if incoming_at > known_at => true,
        ((Some(known_at), _), (Some(incoming_at), _)) if incoming_at < known_at => false,
        ((Some(_), known_paid), (Some(_), incoming_paid)) => incoming_paid || !known_paid,
        _ => true,
    }
}

/// Whether an order moving to `status` takes back the recovery credit it earned: the store
/// cancelled it, refunded it, or its payment failed.
pub fn reverses_recovery(status: &str) -> bool {
    matches!(status, "cancelled" | "refunded" | "failed")
}

/// Whether a converted cart's order stops its restore link from rebuilding it ("You have
/// already ordered"). `order_paid` is the paid state of the order that converted the cart, as
/// last signalled, or `None` when OCart has no record of that order (an administrator marked
/// the cart converted): only a paid order, or an unknown one, blocks; a cancelled, failed or
/// refunded order leaves the shopper free to buy the cart again.
pub fn order_blocks_restore(order_paid: Option<bool>) -> bool {
    order_paid.unwrap_or(true)
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
            modified_at: None,
            payment: None,
            offer_lines: Vec::new(),
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
                modified_at: None,
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

    fn t(minute: i64) -> Option<DateTime<Utc>> {
        Some(at() + chrono::Duration::minutes(minute))
    }

    #[test]
    fn order_signals_are_ordered_by_the_stores_modification_time() {
        // (rule, known (modified, paid), incoming (modified, paid), applies)
        let table = [
            ("a newer signal wins", (t(0), true), (t(5), false), true),
            (
                "a newer paid signal wins",
                (t(0), false),
                (t(5), true),
                true,
            ),
            (
                "an older signal is ignored even if paid",
                (t(5), false),
                (t(0), true),
                false,
            ),
            (
                "an older unpaid signal cannot regress a paid order",
                (t(5), true),
                (t(0), false),
                false,
            ),
            (
                "an equal time keeps the paid state",
                (t(5), true),
                (t(5), false),
                false,
            ),
            (
                "an equal time may add payment",
                (t(5), false),
                (t(5), true),
                true,
            ),
            (
                "an equal time repeated is idempotent",
                (t(5), true),
                (t(5), true),
                true,
            ),
            (
                "a signal without a time goes by arrival",
                (t(5), true),
                (None, false),
                true,
            ),
            (
                "an order recorded without a time goes by arrival",
                (None, true),
                (t(0), false),
                true,
            ),
            (
                "neither time known goes by arrival",
                (None, true),
                (None, false),
                true,
            ),
        ];
        for (rule, known, incoming, applies) in table {
            assert_eq!(signal_applies(known, incoming), applies, "{rule}");
        }
    }

    #[test]
    fn which_statuses_count_as_paid() {
        let offline = vec!["bacs".to_owned(), "cod".to_owned()];
        // (rule, status, gateway, paid)
        let table = [
            (
                "processing is paid whatever the gateway",
                "processing",
                Some("stripe"),
                true,
            ),
            ("completed is paid", "completed", None, true),
            (
                "on-hold through an offline gateway is paid",
                "on-hold",
                Some("bacs"),
                true,
            ),
            (
                "pending through an offline gateway is paid",
                "pending",
                Some("cod"),
                true,
            ),
            (
                "on-hold through a card gateway is not paid",
                "on-hold",
                Some("stripe"),
                false,
            ),
            (
                "pending without a gateway is not paid",
                "pending",
                None,
                false,
            ),
            ("failed is never paid", "failed", Some("bacs"), false),
            ("cancelled is never paid", "cancelled", Some("bacs"), false),
            ("refunded is never paid", "refunded", Some("stripe"), false),
        ];
        for (rule, status, gateway, paid) in table {
            assert_eq!(is_paid(status, gateway, &offline), paid, "{rule}");
        }
    }

    #[test]
    fn which_statuses_take_back_a_recovery() {
        let table = [
            (
                "a cancelled order takes back its recovery",
                "cancelled",
                true,
            ),
            ("a refunded order takes back its recovery", "refunded", true),
            ("a failed order takes back its recovery", "failed", true),
            ("a completed order keeps it", "completed", false),
            ("an order on hold keeps it", "on-hold", false),
            ("a processing order keeps it", "processing", false),
        ];
        for (rule, status, reverses) in table {
            assert_eq!(reverses_recovery(status), reverses, "{rule}");
        }
    }

    #[test]
    fn only_a_paid_or_unknown_order_blocks_a_restore() {
        let table = [
            ("a paid order blocks the restore", Some(true), true),
            (
                "a cancelled, failed or refunded order does not",
                Some(false),
                false,
            ),
            (
                "a cart converted without an order record blocks",
                None,
                true,
            ),
        ];
        for (rule, paid, blocks) in table {
            assert_eq!(order_blocks_restore(paid), blocks, "{rule}");
        }
    }

    #[test]
    fn the_strongest_evidence_names_the_cart() {
        use MatchedBy::*;
        // (rule, evidence that named a cart, the evidence that decides)
        let table: [(&str, &[MatchedBy], Option<MatchedBy>); 7] = [
            (
                "a checkout session beats everything",
                &[Email, Coupon, CartId, RestoreToken, Session],
                Some(Session),
            ),
            (
                "a restore token beats a cart id",
                &[CartId, RestoreToken],
                Some(RestoreToken),
            ),
            ("a cart id beats a coupon", &[Coupon, CartId], Some(CartId)),
            (
                "a coupon beats the buyer's email",
                &[Email, Coupon],
                Some(Coupon),
            ),
            (
                "the buyer's email is the last resort",
                &[Email],
                Some(Email),
            ),
            (
                "a cart id alone is named as a cart id, not a session",
                &[CartId],
                Some(CartId),
            ),
            ("no evidence matches no cart", &[], None),
        ];
        for (rule, found, decides) in table {
            let picked = MatchedBy::strongest(found.iter().map(|by| (*by, by.as_str())));
            assert_eq!(picked.map(|(by, _)| by), decides, "{rule}");
        }
        assert_eq!(
            MatchedBy::PRIORITY.len(),
            5,
            "every kind of evidence has a rank"
        );
    }

    #[test]
    fn a_stale_delivery_changes_nothing_and_a_newer_time_is_kept() {
        let mut paid = facts("processing", true);
        paid.modified_at = t(10);
        let recorded = OrderEvent::Recorded {
            facts: paid.clone(),
            attribution: None,
            at: at(),
        };
        let mut stale = facts("pending", false);
        stale.modified_at = t(5);
        TestFramework::<Order>::with(())
            .given(vec![recorded.clone()])
            .when(OrderCommand::Record {
                facts: stale,
                attribution: None,
                at: at(),
            })
            .then_expect_events(vec![]);
        let mut touched = paid.clone();
        touched.modified_at = t(20);
        TestFramework::<Order>::with(())
            .given(vec![recorded])
            .when(OrderCommand::Record {
                facts: touched,
                attribution: None,
                at: at(),
            })
            .then_expect_events(vec![OrderEvent::StatusChanged {
                status: "processing".into(),
                paid: true,
                total: 3980,
                attribution: None,
                modified_at: t(20),
                at: at(),
            }]);
    }

    #[test]
    fn order_ids_are_stable() {
        assert_eq!(order_id_for("1001"), order_id_for("1001"));
        assert_ne!(order_id_for("1001"), order_id_for("1002"));
    }
}
