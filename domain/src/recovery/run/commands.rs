use chrono::{DateTime, Duration, Utc};

use super::events::{
    DeliveryReport, IssuedCoupon, LinkHashes, RestoreOutcome, RunStart, StopReason,
};

#[derive(Debug, Clone, PartialEq)]
pub enum RunCommand {
    Start {
        start: Box<RunStart>,
        at: DateTime<Utc>,
    },
    /// Claims the due step for sending. A claim older than `stale_after` is taken over (same
    /// message key); a fresher one refuses.
    Claim {
        at: DateTime<Utc>,
        stale_after: Duration,
    },
    /// The claimed message was accepted by its channel (with the coupon it offered).
    RecordSent {
        message_key: String,
        links: LinkHashes,
        coupon: Option<IssuedCoupon>,
        at: DateTime<Utc>,
    },
    /// The claimed message could not be sent.
    RecordFailed {
        message_key: String,
        error: String,
        at: DateTime<Utc>,
    },
    /// The cart was ordered after abandonment. The run is credited with the order (converted,
    /// with its revenue) only if it sent a message before the order was placed
    /// ([`run_earns_credit`](super::run_earns_credit)); otherwise it stops (`order_placed`). `placed_at` defaults to `at`.
    Convert {
        order_id: Option<String>,
        revenue: Option<i64>,
        placed_at: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
    },
    /// The order `order_id` was cancelled, refunded or failed (`status`): if this run was
    /// credited with it, the credit is taken back. Anything else changes nothing.
    ReverseConversion {
        order_id: String,
        status: String,
        at: DateTime<Utc>,
    },
    /// What happened to a sent message downstream: a provider's delivery, bounce or complaint
    /// report, or an open (tracking pixel). Reports already recorded (by provider id, or the
    /// first open/delivery of a message) change nothing.
    ReportDelivery {
        message_key: String,
        report: DeliveryReport,
        at: DateTime<Utc>,
    },
    /// An unused coupon of the run passed its expiry and was removed (from the store too).
    ExpireCoupon { code: String, at: DateTime<Utc> },
    /// A restore link of message `message_key` was opened, with this outcome.
    RecordRestore {
        message_key: String,
        outcome: RestoreOutcome,
        at: DateTime<Utc>,
    },
    Stop {
        reason: StopReason,
        at: DateTime<Utc>,
    },
}
