use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::recovery::{Channel, CouponKind, Step};

/// Why a run ended without a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every step was sent (or gave up).
    Completed,
    /// An administrator stopped it.
    Manual,
    /// The recipient unsubscribed.
    Unsubscribed,
    /// The recipient is on the suppression list (bounce, complaint, manual).
    Suppressed,
    /// An order was placed for this cart or by this shopper (not through this run).
    OrderPlaced,
    /// The cart is no longer abandoned: captured again, converted, expired or erased.
    CartNotAbandoned,
    /// The shopper's consent is gone (withdrawn or erased).
    NoConsent,
    /// The cart was abandoned longer ago than `recovery.max_age_days`.
    TooOld,
    /// Another run messages this recipient (`recovery.quiet_period_hours`).
    QuietPeriod,
    /// No address to send to on this step's channel.
    NoRecipient,
    /// The order this run recovered was cancelled, refunded or failed: its credit was taken
    /// back (`recovery/conversion_reversed`).
    OrderReversed,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Manual => "manual",
            Self::Unsubscribed => "unsubscribed",
            Self::Suppressed => "suppressed",
            Self::OrderPlaced => "order_placed",
            Self::CartNotAbandoned => "cart_not_abandoned",
            Self::NoConsent => "no_consent",
            Self::TooOld => "too_old",
            Self::QuietPeriod => "quiet_period",
            Self::NoRecipient => "no_recipient",
            Self::OrderReversed => "order_reversed",
        }
    }
}

/// What a run was opened with. The steps are a snapshot of the sequence at that moment, so
/// editing a sequence changes future runs, never the timing of one already under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStart {
    /// The run's own id (message keys name it).
    pub run_id: String,
    pub cart_id: String,
    pub sequence_id: String,
    pub steps: Vec<Step>,
    pub abandoned_at: DateTime<Utc>,
    /// The subject hash of the cart's email, for suppression and the quiet period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RunEvent {
    #[serde(rename = "recovery/run_started")]
    Started {
        start: Box<RunStart>,
        /// When step 1 falls due.
        next_due_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// A dispatcher holds step `step`, attempt `attempt`; `resumed` when it took over a claim
    /// a crashed dispatcher left.
    #[serde(rename = "recovery/step_claimed")]
    Claimed {
        step: u32,
        attempt: u32,
        message_key: String,
        channel: Channel,
        resumed: bool,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/dispatched")]
    Dispatched {
        step: u32,
        attempt: u32,
        message_key: String,
        channel: Channel,
        template: String,
        /// sha256 of the restore and unsubscribe tokens the message carries.
        #[serde(default)]
        links: LinkHashes,
        /// The recovery coupon the message offered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coupon: Option<IssuedCoupon>,
        /// When the next step falls due; `None` after the last step.
        next_due_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/failed")]
    Failed {
        step: u32,
        attempt: u32,
        message_key: String,
        error: String,
        /// When the step is tried again; `None` when it has used its attempts.
        retry_at: Option<DateTime<Utc>>,
        /// When the run goes on (a retry, the next step, or `None`: nothing left).
        next_due_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/converted")]
    Converted {
        order_id: Option<String>,
        revenue: Option<i64>,
        at: DateTime<Utc>,
    },
    /// The order the run was credited with was cancelled, refunded or failed (`status`): its
    /// revenue no longer counts as recovered, and the run is stopped (`order_reversed`).
    #[serde(rename = "recovery/conversion_reversed")]
    ConversionReversed {
        order_id: String,
        status: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/stopped")]
    Stopped {
        reason: StopReason,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/delivery_reported")]
    DeliveryReported {
        message_key: String,
        report: DeliveryReport,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/coupon_expired")]
    CouponExpired { code: String, at: DateTime<Utc> },
    /// A shopper opened a restore link (CartBay's `restore_clicked`), and what came of it:
    /// the cart rebuilt, rebuilt without items the store no longer sells, or not at all.
    #[serde(rename = "recovery/restore_clicked")]
    RestoreClicked {
        message_key: String,
        outcome: RestoreOutcome,
        at: DateTime<Utc>,
    },
}

/// What a mail provider (or the open pixel) reported about a sent message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryKind {
    Delivered,
    Opened,
    Bounced,
    Complained,
}

impl DeliveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivery",
            Self::Opened => "open",
            Self::Bounced => "bounce",
            Self::Complained => "complaint",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReport {
    pub kind: DeliveryKind,
    /// A permanent bounce (the address does not exist): the recipient is suppressed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hard: bool,
    /// The provider's id of the report, to recognise its retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// The provider's words (a bounce's diagnostic), at most 300 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl DeliveryReport {
    /// What makes two reports the same report.
    pub(super) fn dedupe_key(&self, message_key: &str) -> String {
        match &self.provider_id {
            Some(id) => format!("id:{id}"),
            None => format!("{}:{message_key}", self.kind.as_str()),
        }
    }
}

/// What opening a restore link did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RestoreOutcome {
    /// The whole cart was handed to the store's checkout.
    Restored,
    /// Some items are no longer available; the rest was handed over.
    Partial { unavailable: Vec<crate::ProductId> },
    /// Nothing was handed over.
    Failed { reason: RestoreFailure },
}

impl RestoreOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Restored => "restored",
            Self::Partial { .. } => "partial",
            Self::Failed { .. } => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreFailure {
    /// The link is older than `recovery.restore_link_days`.
    Expired,
    /// The cart's personal data was erased, or the cart is gone.
    CartErased,
    /// The cart has already been ordered.
    AlreadyOrdered,
    /// No item of the cart is available any more.
    Unavailable,
}

impl RestoreFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::CartErased => "cart_erased",
            Self::AlreadyOrdered => "already_ordered",
            Self::Unavailable => "unavailable",
        }
    }
}

impl DomainEvent for RunEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Started { .. } => "recovery/run_started",
            Self::Claimed { .. } => "recovery/step_claimed",
            Self::Dispatched { .. } => "recovery/dispatched",
            Self::Failed { .. } => "recovery/failed",
            Self::Converted { .. } => "recovery/converted",
            Self::ConversionReversed { .. } => "recovery/conversion_reversed",
            Self::Stopped { .. } => "recovery/stopped",
            Self::RestoreClicked { .. } => "recovery/restore_clicked",
            Self::CouponExpired { .. } => "recovery/coupon_expired",
            Self::DeliveryReported { .. } => "recovery/delivery_reported",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("no such recovery run")]
    NotFound,
    #[error("the run has no steps")]
    NoSteps,
    #[error("the run is {0}")]
    Ended(&'static str),
    #[error("the next step is not due before {0}")]
    NotDue(DateTime<Utc>),
    #[error("another dispatcher is sending step {step} (claimed at {at})")]
    Claimed { step: u32, at: DateTime<Utc> },
    #[error("no claim with message key {0} is outstanding")]
    NoSuchClaim(String),
}

/// The sha256 (hex) of the link tokens a message carries; the tokens themselves are never
/// recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkHashes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe: Option<String>,
    /// The open-tracking pixel of an email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open: Option<String>,
}

/// A recovery coupon: single use, for the cart's email only, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCoupon {
    /// `OCART-…`, upper case.
    pub code: String,
    pub kind: CouponKind,
    /// Minor units (fixed_cart) or a percentage (percent).
    pub amount: i64,
    pub currency: String,
    pub expires_at: DateTime<Utc>,
    /// The coupon's id in the store, when the store connector created it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<u64>,
}
