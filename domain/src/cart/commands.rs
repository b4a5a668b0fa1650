use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{CartItem, CartTotals, Currency, PersonalField, Sealed, Source, Stage};

/// What the shopper said about recovery messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// `Some(true)` consents, `Some(false)` withdraws, `None` said nothing.
    pub given: Option<bool>,
    /// The wording the shopper saw, kept as proof of consent.
    pub text: Option<String>,
}

/// Create or update the cart of one checkout session. All values are validated and personal
/// fields already sealed by the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureCart {
    pub session_token_hash: String,
    pub email: PersonalField,
    pub phone: Option<PersonalField>,
    pub name: Option<Sealed>,
    /// HMAC of the normalised name, so a changed name counts as a material change.
    pub name_hash: Option<String>,
    pub consent: Consent,
    /// `recovery.consent_required` at the time of the capture.
    pub consent_required: bool,
    pub source: Source,
    pub stage: Stage,
    pub currency: Currency,
    pub items: Vec<CartItem>,
    pub totals: CartTotals,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CartCommand {
    Capture(Box<CaptureCart>),
    WithdrawConsent {
        at: DateTime<Utc>,
    },
    /// `forced` is an admin's decision and skips the inactivity rule.
    MarkAbandoned {
        at: DateTime<Utc>,
        threshold_min: u32,
        forced: bool,
    },
    /// An order was placed for the cart. Converting again with the same order id changes
    /// nothing (a replayed order signal).
    MarkConverted {
        at: DateTime<Utc>,
        order_id: Option<String>,
        revenue: Option<i64>,
        /// When the order was placed, if known (`at` otherwise): an order placed before the
        /// cart was abandoned is not a recovery.
        placed_at: Option<DateTime<Utc>>,
    },
    Expire {
        at: DateTime<Utc>,
    },
}
