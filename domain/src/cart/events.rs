use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::{CartItem, CartTotals, Currency, PersonalField, Sealed, Source, Stage, SubjectHash};

/// The material content of a capture, as the log keeps it (personal fields sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartContent {
    pub session_token_hash: String,
    pub email: PersonalField,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<PersonalField>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Sealed>,
    pub consent_text: Option<String>,
    pub source: Source,
    pub stage: Stage,
    pub currency: Currency,
    pub items: Vec<CartItem>,
    pub totals: CartTotals,
    /// sha256 of the material parts; equal fingerprints mean nothing material changed.
    pub fingerprint: String,
    pub captured_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AbandonmentKind {
    CartAbandoned,
    CheckoutAbandoned,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum CartEvent {
    #[serde(rename = "cart/created")]
    Created(Box<CartContent>),
    #[serde(rename = "cart/updated")]
    Updated(Box<CartContent>),
    #[serde(rename = "cart/consent_withdrawn")]
    ConsentWithdrawn {
        at: DateTime<Utc>,
        subjects: Vec<SubjectHash>,
    },
    #[serde(rename = "cart/abandoned")]
    Abandoned {
        at: DateTime<Utc>,
        kind: AbandonmentKind,
        last_activity_at: DateTime<Utc>,
        forced: bool,
    },
    #[serde(rename = "cart/converted")]
    Converted {
        at: DateTime<Utc>,
        order_id: Option<String>,
        revenue: Option<i64>,
        /// The order was placed before the cart was abandoned (CartBay's
        /// `completed_before_abandonment`): not a recovery.
        #[serde(default)]
        before_abandonment: bool,
        /// When the store says the order was placed (recovery credit is judged against it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        placed_at: Option<DateTime<Utc>>,
    },
    #[serde(rename = "cart/expired")]
    Expired { at: DateTime<Utc> },
}

impl DomainEvent for CartEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created(_) => "cart/created",
            Self::Updated(_) => "cart/updated",
            Self::ConsentWithdrawn { .. } => "cart/consent_withdrawn",
            Self::Abandoned { .. } => "cart/abandoned",
            Self::Converted { .. } => "cart/converted",
            Self::Expired { .. } => "cart/expired",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CartError {
    #[error("the cart does not exist")]
    NotFound,
    #[error("the cart is {0} and can no longer change")]
    Closed(&'static str),
    #[error("the cart is {0}, not active")]
    NotActive(&'static str),
    #[error(
        "the cart was active at {last_activity_at}; it is not abandoned before {abandoned_at}"
    )]
    StillActive {
        last_activity_at: DateTime<Utc>,
        abandoned_at: DateTime<Utc>,
    },
}
