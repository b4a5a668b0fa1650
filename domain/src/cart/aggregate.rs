use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::commands::{CaptureCart, CartCommand};
use super::events::{AbandonmentKind, CartContent, CartError, CartEvent};
use crate::{Currency, Stage, SubjectHash};

/// A repeated capture that changes nothing material within this many seconds emits no event.
pub const MATERIAL_WINDOW_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CartStatus {
    /// Never captured (or withdrawn before anything was kept).
    #[default]
    New,
    Active,
    Abandoned,
    Converted,
    Expired,
    /// Consent withdrawn: erased and out of the read table until captured again with consent.
    Withdrawn,
}

impl CartStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Active => "active",
            Self::Abandoned => "abandoned",
            Self::Converted => "converted",
            Self::Expired => "expired",
            Self::Withdrawn => "withdrawn",
        }
    }
}

/// The cart of one checkout session. Its id is derived from the session token
/// ([`cart_id_for_session`]), so captures address it without reading a projection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cart {
    status: CartStatus,
    stage: Option<Stage>,
    fingerprint: Option<String>,
    last_activity_at: Option<DateTime<Utc>>,
    subjects: Vec<SubjectHash>,
    #[serde(default)]
    abandoned_at: Option<DateTime<Utc>>,
    #[serde(default)]
    order_id: Option<String>,
    #[serde(default)]
    before_abandonment: bool,
    /// The currency and total of the last capture (what an admin conversion records).
    #[serde(default)]
    currency: Option<Currency>,
    #[serde(default)]
    total: Option<i64>,
}

/// The cart id of a session token: a UUID (version 8) from sha256 of the token.
pub fn cart_id_for_session(session_token: &str) -> Uuid {
    let digest = Sha256::digest(format!("ocart:cart:{session_token}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// What the log and the read table keep of a session token: its sha256, hex.
pub fn session_token_hash(session_token: &str) -> String {
    hex::encode(Sha256::digest(session_token.as_bytes()))
}

fn fingerprint(capture: &CaptureCart) -> String {
    let material = serde_json::json!({
        "email": capture.email.subject,
        "phone": capture.phone.as_ref().map(|p| &p.subject),
        "name": capture.name_hash,
        "stage": capture.stage,
        "currency": capture.currency,
        "items": capture.items,
        "totals": capture.totals,
        "source": capture.source,
    });
    hex::encode(Sha256::digest(material.to_string().as_bytes()))
}

impl Cart {
    pub fn status(&self) -> CartStatus {
        self.status
    }

    pub fn last_activity_at(&self) -> Option<DateTime<Utc>> {
        self.last_activity_at
    }

    /// The order that converted the cart.
    pub fn order_id(&self) -> Option<&str> {
        self.order_id.as_deref()
    }

    /// The shopper's email subject (none once withdrawn).
    pub fn email_subject(&self) -> Option<&SubjectHash> {
        self.subjects.first()
    }

    /// The currency of the last capture.
    pub fn currency(&self) -> Option<Currency> {
        self.currency
    }

    /// The total (minor units) of the last capture.
    pub fn total(&self) -> Option<i64> {
        self.total
    }

    /// Whether the converting order came before abandonment (not a recovery).
    pub fn converted_before_abandonment(&self) -> bool {
        self.before_abandonment
    }

    fn convert(
        &self,
        at: DateTime<Utc>,
        order_id: Option<String>,
        revenue: Option<i64>,
        placed_at: Option<DateTime<Utc>>,
    ) -> Result<Option<CartEvent>, CartError> {
        let placed = placed_at.unwrap_or(at);
        let before_abandonment = match self.status {
            CartStatus::Active => true,
            CartStatus::Abandoned => self.abandoned_at.is_some_and(|a| placed < a),
            CartStatus::Converted if order_id.is_some() && order_id == self.order_id => {
                return Ok(None)
            }
            CartStatus::New | CartStatus::Withdrawn => return Err(CartError::NotFound),
            other => return Err(CartError::Closed(other.as_str())),
        };
        Ok(Some(CartEvent::Converted {
            at,
            order_id,
            revenue,
            before_abandonment,
            placed_at,
        }))
    }

    fn capture(&self, capture: CaptureCart) -> Result<Option<CartEvent>, CartError> {
        if !super::consents(capture.consent.given, capture.consent_required) {
            return Ok(self.withdrawal(capture.at));
        }
        if matches!(self.status, CartStatus::Converted | CartStatus::Expired) {
            return Err(CartError::Closed(self.status.as_str()));
        }
        let fingerprint = fingerprint(&capture);
        let unchanged = self.status != CartStatus::Withdrawn
            && self.fingerprint.as_deref() == Some(fingerprint.as_str())
            && self
                .last_activity_at
                .is_some_and(|last| capture.at - last < Duration::seconds(MATERIAL_WINDOW_SECS));
        if unchanged {
            return Ok(None);
        }
        let content = Box::new(CartContent {
            session_token_hash: capture.session_token_hash,
            email: capture.email,
            phone: capture.phone,
            name: capture.name,
            consent_text: capture.consent.text,
            source: capture.source,
            stage: capture.stage,
            currency: capture.currency,
            items: capture.items,
            totals: capture.totals,
            fingerprint,
            captured_at: capture.at,
        });
        Ok(Some(if self.status == CartStatus::New {
            CartEvent::Created(content)
        } else {
            CartEvent::Updated(content)
        }))
    }

    fn withdrawal(&self, at: DateTime<Utc>) -> Option<CartEvent> {
        match self.status {
            CartStatus::New | CartStatus::Withdrawn => None,
            _ => Some(CartEvent::ConsentWithdrawn {
                at,
                subjects: self.subjects.clone(),
            }),
        }
    }

    fn abandon(
        &self,
        at: DateTime<Utc>,
        threshold_min: u32,
        forced: bool,
    ) -> Result<CartEvent, CartError> {
        match self.status {
            CartStatus::Active => {}
            CartStatus::New => return Err(CartError::NotFound),
            other => return Err(CartError::NotActive(other.as_str())),
        }
        let last_activity_at = self.last_activity_at.unwrap_or(at);
        let abandoned_at = last_activity_at + Duration::minutes(i64::from(threshold_min));
        if !forced && at < abandoned_at {
            return Err(CartError::StillActive {
                last_activity_at,
                abandoned_at,
            });
        }
        let kind = match self.stage {
            Some(Stage::Checkout) => AbandonmentKind::CheckoutAbandoned,
            _ => AbandonmentKind::CartAbandoned,
        };
        Ok(CartEvent::Abandoned {
            at,
            kind,
            last_activity_at,
            forced,
        })
    }
}

impl Aggregate for Cart {
    const TYPE: &'static str = "cart";
    type Command = CartCommand;
    type Event = CartEvent;
    type Error = CartError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            CartCommand::Capture(capture) => self.capture(*capture)?,
            CartCommand::WithdrawConsent { at } => self.withdrawal(at),
            CartCommand::MarkAbandoned {
                at,
                threshold_min,
                forced,
            } => Some(self.abandon(at, threshold_min, forced)?),
            CartCommand::MarkConverted {
                at,
                order_id,
                revenue,
                placed_at,
            } => self.convert(at, order_id, revenue, placed_at)?,
            CartCommand::Expire { at } => match self.status {
                CartStatus::Active | CartStatus::Abandoned => Some(CartEvent::Expired { at }),
                CartStatus::New | CartStatus::Withdrawn => return Err(CartError::NotFound),
                CartStatus::Converted | CartStatus::Expired => None,
            },
        };
        if let Some(event) = event {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CartEvent::Created(content) | CartEvent::Updated(content) => {
                self.status = CartStatus::Active;
                self.stage = Some(content.stage);
                self.fingerprint = Some(content.fingerprint);
                self.last_activity_at = Some(content.captured_at);
                self.currency = Some(content.currency);
                self.total = Some(content.totals.total);
                self.subjects = std::iter::once(content.email.subject)
                    .chain(content.phone.map(|p| p.subject))
                    .collect();
            }
            CartEvent::ConsentWithdrawn { .. } => {
                self.status = CartStatus::Withdrawn;
                self.fingerprint = None;
                self.subjects.clear();
            }
            CartEvent::Abandoned { at, .. } => {
                self.status = CartStatus::Abandoned;
                self.abandoned_at = Some(at);
            }
            CartEvent::Converted {
                order_id,
                before_abandonment,
                ..
            } => {
                self.status = CartStatus::Converted;
                self.order_id = order_id;
                self.before_abandonment = before_abandonment;
            }
            CartEvent::Expired { .. } => self.status = CartStatus::Expired,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cart::Consent;
    use crate::{CartItem, CartTotals, Currency, PersonalField, Sealed, Source};
    use cqrs_es::test::TestFramework;

    type CartTest = TestFramework<Cart>;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(minutes)
    }

    fn capture(at: DateTime<Utc>, quantity: u32, consent: Option<bool>) -> CaptureCart {
        CaptureCart {
            session_token_hash: "tok".into(),
            email: PersonalField {
                subject: SubjectHash::from_hex("s1"),
                sealed: Sealed {
                    key: "k".into(),
                    ct: "c".into(),
                },
            },
            phone: None,
            name: None,
            name_hash: None,
            consent: Consent {
                given: consent,
                text: Some("Email me my cart".into()),
            },
            consent_required: true,
            source: Source::Classic,
            stage: Stage::Checkout,
            currency: Currency::parse("currency", "EUR").unwrap(),
            items: vec![CartItem {
                product_id: crate::ProductId::Number(1),
                variation_id: None,
                sku: None,
                name: "Mug".into(),
                quantity,
                unit_price: 1200,
                categories: vec![],
                image_url: None,
                subscription: false,
            }],
            totals: CartTotals {
                subtotal: 1200 * i64::from(quantity),
                total: 1200 * i64::from(quantity),
                ..Default::default()
            },
            at,
        }
    }

    fn created(at: DateTime<Utc>) -> CartEvent {
        let mut events = Vec::new();
        let cart = Cart::default();
        if let Some(e) = cart.capture(capture(at, 1, Some(true))).unwrap() {
            events.push(e);
        }
        events.remove(0)
    }

    #[test]
    fn a_first_capture_with_consent_creates_the_cart() {
        let event = created(t(0));
        assert!(matches!(event, CartEvent::Created(_)));
    }

    #[test]
    fn a_cart_without_consent_is_not_captured() {
        CartTest::with(())
            .given_no_previous_events()
            .when(CartCommand::Capture(Box::new(capture(t(0), 1, None))))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_repeated_capture_within_a_minute_emits_nothing() {
        CartTest::with(())
            .given(vec![created(t(0))])
            .when(CartCommand::Capture(Box::new(capture(
                t(0) + Duration::seconds(30),
                1,
                Some(true),
            ))))
            .then_expect_events(vec![]);
    }

    #[test]
    fn a_changed_quantity_updates_the_cart() {
        let result = CartTest::with(())
            .given(vec![created(t(0))])
            .when(CartCommand::Capture(Box::new(capture(
                t(0) + Duration::seconds(30),
                2,
                Some(true),
            ))))
            .inspect_result();
        let events = result.unwrap();
        assert!(matches!(events.as_slice(), [CartEvent::Updated(_)]));
    }

    #[test]
    fn consent_false_withdraws_a_captured_cart() {
        CartTest::with(())
            .given(vec![created(t(0))])
            .when(CartCommand::Capture(Box::new(capture(
                t(1),
                1,
                Some(false),
            ))))
            .then_expect_events(vec![CartEvent::ConsentWithdrawn {
                at: t(1),
                subjects: vec![SubjectHash::from_hex("s1")],
            }]);
    }

    #[test]
    fn a_cart_is_not_abandoned_before_the_threshold() {
        CartTest::with(())
            .given(vec![created(t(0))])
            .when(CartCommand::MarkAbandoned {
                at: t(29),
                threshold_min: 30,
                forced: false,
            })
            .then_expect_error(CartError::StillActive {
                last_activity_at: t(0),
                abandoned_at: t(30),
            });
    }

    #[test]
    fn a_checkout_stage_cart_is_checkout_abandoned_after_the_threshold() {
        CartTest::with(())
            .given(vec![created(t(0))])
            .when(CartCommand::MarkAbandoned {
                at: t(30),
                threshold_min: 30,
                forced: false,
            })
            .then_expect_events(vec![CartEvent::Abandoned {
                at: t(30),
                kind: AbandonmentKind::CheckoutAbandoned,
                last_activity_at: t(0),
                forced: false,
            }]);
    }

    #[test]
    fn a_converted_cart_cannot_be_captured_again() {
        CartTest::with(())
            .given(vec![
                created(t(0)),
                CartEvent::Converted {
                    at: t(5),
                    order_id: Some("1".into()),
                    revenue: Some(1200),
                    before_abandonment: true,
                    placed_at: None,
                },
            ])
            .when(CartCommand::Capture(Box::new(capture(t(6), 2, Some(true)))))
            .then_expect_error(CartError::Closed("converted"));
    }

    fn abandoned(at: DateTime<Utc>) -> CartEvent {
        CartEvent::Abandoned {
            at,
            kind: AbandonmentKind::CheckoutAbandoned,
            last_activity_at: t(0),
            forced: false,
        }
    }

    fn convert(order: &str, placed_at: DateTime<Utc>) -> CartCommand {
        CartCommand::MarkConverted {
            at: t(120),
            order_id: Some(order.into()),
            revenue: Some(1200),
            placed_at: Some(placed_at),
        }
    }

    #[test]
    fn an_order_after_abandonment_is_a_recovery() {
        CartTest::with(())
            .given(vec![created(t(0)), abandoned(t(30))])
            .when(convert("7", t(90)))
            .then_expect_events(vec![CartEvent::Converted {
                at: t(120),
                order_id: Some("7".into()),
                revenue: Some(1200),
                before_abandonment: false,
                placed_at: Some(t(90)),
            }]);
    }

    #[test]
    fn an_order_placed_before_abandonment_is_not_a_recovery() {
        // Placed at 20 minutes, reported after the cart was marked abandoned at 30.
        CartTest::with(())
            .given(vec![created(t(0)), abandoned(t(30))])
            .when(convert("7", t(20)))
            .then_expect_events(vec![CartEvent::Converted {
                at: t(120),
                order_id: Some("7".into()),
                revenue: Some(1200),
                before_abandonment: true,
                placed_at: Some(t(20)),
            }]);
    }

    #[test]
    fn the_same_order_converting_again_changes_nothing_and_another_is_refused() {
        let converted = CartEvent::Converted {
            at: t(120),
            order_id: Some("7".into()),
            revenue: Some(1200),
            before_abandonment: false,
            placed_at: Some(t(90)),
        };
        CartTest::with(())
            .given(vec![created(t(0)), abandoned(t(30)), converted.clone()])
            .when(convert("7", t(90)))
            .then_expect_events(vec![]);
        CartTest::with(())
            .given(vec![created(t(0)), abandoned(t(30)), converted])
            .when(convert("8", t(90)))
            .then_expect_error(CartError::Closed("converted"));
    }

    #[test]
    fn cart_ids_are_stable_per_session_token() {
        assert_eq!(cart_id_for_session("abc"), cart_id_for_session("abc"));
        assert_ne!(cart_id_for_session("abc"), cart_id_for_session("abd"));
    }
}
