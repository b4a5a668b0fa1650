//! The `RecoveryRun` aggregate: one cart going through one sequence. It decides, and records,
//! which step is due, which step a dispatcher has claimed, what was sent and what failed, and
//! when the run ends (converted, or stopped with a reason).
//!
//! Exactly-once sending rests on two rules. A step is sent only under a claim, and a claim is
//! an event appended at the run's next sequence number, so of two dispatchers racing for the
//! same step one append wins and the other is refused. A claim names its message key (run,
//! step, attempt), which becomes the email's Message-ID: a dispatcher that finds a claim left
//! behind by a crash takes it over with the same key, so the message it sends is the same
//! message, recognisable as such downstream, and the takeover is itself recorded.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{Channel, CouponKind, Step, MIN_DELAY_MIN};

/// Sends of one step, counting the first: CartBay's "retried up to three attempts".
pub const MAX_ATTEMPTS: u32 = 3;
/// Minutes between a failed attempt and the next: `15 × attempt`.
pub const RETRY_STEP_MIN: i64 = 15;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Not started.
    #[default]
    New,
    /// Waiting for its next step to fall due.
    Pending,
    /// A dispatcher has claimed a step and is sending it.
    Running,
    Converted,
    Stopped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Converted => "converted",
            Self::Stopped => "stopped",
        }
    }
}

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
    /// ([`run_earns_credit`]); otherwise it stops (`order_placed`). `placed_at` defaults to `at`.
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
    fn dedupe_key(&self, message_key: &str) -> String {
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
    Partial { unavailable: Vec<u64> },
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

/// A claim a dispatcher holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub step: u32,
    pub attempt: u32,
    pub message_key: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRun {
    id: String,
    start: Option<RunStart>,
    status: RunStatus,
    /// 0-based index of the step to send next.
    next_step: usize,
    /// Attempts already made on `next_step`.
    attempts: u32,
    next_due_at: Option<DateTime<Utc>>,
    claim: Option<Claim>,
    /// Coupon codes recorded expired.
    #[serde(default)]
    expired_coupons: Vec<String>,
    /// Delivery reports recorded (their dedupe keys).
    #[serde(default)]
    reports: Vec<String>,
    /// When the run's first message was accepted by its channel.
    #[serde(default)]
    first_sent_at: Option<DateTime<Utc>>,
    /// The order the run is credited with (while converted).
    #[serde(default)]
    credited_order: Option<String>,
    /// Orders whose credit was taken back: they never credit this run again.
    #[serde(default)]
    reversed_orders: Vec<String>,
}

/// Whether a run earns the credit (and the revenue) of an order placed at `placed_at` on its
/// cart: only if it sent a message before the order was placed. A run that never sent, or
/// sent only after the order, did not recover it. Stores give order times in whole seconds,
/// so a message sent within the second the order names counts as before it.
pub fn run_earns_credit(first_sent_at: Option<DateTime<Utc>>, placed_at: DateTime<Utc>) -> bool {
    use chrono::SubsecRound;
    first_sent_at.is_some_and(|sent| sent.trunc_subsecs(0) <= placed_at)
}

/// The message key of (run, step, attempt): stable, so it doubles as the Message-ID.
pub fn message_key(run_id: &str, step: u32, attempt: u32) -> String {
    format!("{run_id}.s{step}.a{attempt}")
}

impl RecoveryRun {
    pub fn status(&self) -> RunStatus {
        self.status
    }
    pub fn start(&self) -> Option<&RunStart> {
        self.start.as_ref()
    }
    pub fn next_due_at(&self) -> Option<DateTime<Utc>> {
        self.next_due_at
    }
    pub fn claim(&self) -> Option<&Claim> {
        self.claim.as_ref()
    }
    /// The step a dispatcher would send next (1-based), and its definition.
    pub fn next_step(&self) -> Option<(u32, &Step)> {
        let start = self.start.as_ref()?;
        start
            .steps
            .get(self.next_step)
            .map(|s| (self.next_step as u32 + 1, s))
    }

    fn ended(&self) -> Option<&'static str> {
        match self.status {
            RunStatus::Converted | RunStatus::Stopped => Some(self.status.as_str()),
            RunStatus::New => Some("not started"),
            _ => None,
        }
    }

    /// When step index `index` falls due, given that the previous message went out at `after`:
    /// its delay from abandonment, but never sooner than 15 minutes after the previous message
    /// (overdue steps after downtime are sent, one at a time, not all at once).
    fn due_of(&self, index: usize, after: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let start = self.start.as_ref()?;
        let step = start.steps.get(index)?;
        let due = start.abandoned_at + Duration::minutes(step.delay_min);
        Some(match after {
            Some(previous) => due.max(previous + Duration::minutes(MIN_DELAY_MIN)),
            None => due,
        })
    }

    fn outstanding(&self, key: &str) -> Result<&Claim, RunError> {
        match &self.claim {
            Some(claim) if claim.message_key == key && self.status == RunStatus::Running => {
                Ok(claim)
            }
            _ => Err(RunError::NoSuchClaim(key.to_owned())),
        }
    }
}

impl Aggregate for RecoveryRun {
    const TYPE: &'static str = "recovery_run";
    type Command = RunCommand;
    type Event = RunEvent;
    type Error = RunError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            RunCommand::Start { start, at } => {
                if self.status != RunStatus::New {
                    // Opening the same run twice (a replayed trigger) changes nothing.
                    return Ok(());
                }
                let first = start.steps.first().ok_or(RunError::NoSteps)?;
                let next_due_at = start.abandoned_at + Duration::minutes(first.delay_min);
                vec![RunEvent::Started {
                    start,
                    next_due_at,
                    at,
                }]
            }
            RunCommand::Claim { at, stale_after } => {
                if let Some(state) = self.ended() {
                    return Err(RunError::Ended(state));
                }
                let (step, definition) = self.next_step().ok_or(RunError::Ended("complete"))?;
                let channel = definition.channel;
                match (&self.claim, self.status) {
                    (Some(claim), RunStatus::Running) => {
                        if at - claim.at < stale_after {
                            return Err(RunError::Claimed {
                                step: claim.step,
                                at: claim.at,
                            });
                        }
                        vec![RunEvent::Claimed {
                            step: claim.step,
                            attempt: claim.attempt,
                            message_key: claim.message_key.clone(),
                            channel,
                            resumed: true,
                            at,
                        }]
                    }
                    _ => {
                        let due = self.next_due_at.unwrap_or(at);
                        if at < due {
                            return Err(RunError::NotDue(due));
                        }
                        let attempt = self.attempts + 1;
                        vec![RunEvent::Claimed {
                            step,
                            attempt,
                            message_key: message_key(&self.id, step, attempt),
                            channel,
                            resumed: false,
                            at,
                        }]
                    }
                }
            }
            RunCommand::RecordSent {
                message_key,
                links,
                coupon,
                at,
            } => {
                let claim = self.outstanding(&message_key)?.clone();
                let index = claim.step as usize - 1;
                let step = &self.start.as_ref().ok_or(RunError::NotFound)?.steps[index];
                let next_due_at = self.due_of(index + 1, Some(at));
                let mut events = vec![RunEvent::Dispatched {
                    step: claim.step,
                    attempt: claim.attempt,
                    message_key,
                    channel: step.channel,
                    template: step.template.clone(),
                    links,
                    coupon,
                    next_due_at,
                    at,
                }];
                if next_due_at.is_none() {
                    events.push(RunEvent::Stopped {
                        reason: StopReason::Completed,
                        at,
                    });
                }
                events
            }
            RunCommand::RecordFailed {
                message_key,
                error,
                at,
            } => {
                let claim = self.outstanding(&message_key)?.clone();
                let index = claim.step as usize - 1;
                let (retry_at, next_due_at) = if claim.attempt < MAX_ATTEMPTS {
                    let retry = at + Duration::minutes(RETRY_STEP_MIN * i64::from(claim.attempt));
                    (Some(retry), Some(retry))
                } else {
                    (None, self.due_of(index + 1, Some(at)))
                };
                let mut events = vec![RunEvent::Failed {
                    step: claim.step,
                    attempt: claim.attempt,
                    message_key,
                    error: error.chars().take(500).collect(),
                    retry_at,
                    next_due_at,
                    at,
                }];
                if next_due_at.is_none() {
                    events.push(RunEvent::Stopped {
                        reason: StopReason::Completed,
                        at,
                    });
                }
                events
            }
            RunCommand::Convert {
                order_id,
                revenue,
                placed_at,
                at,
            } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                RunStatus::Converted => return Ok(()),
                _ if order_id
                    .as_ref()
                    .is_some_and(|o| self.reversed_orders.contains(o)) =>
                {
                    return Ok(())
                }
                _ if !run_earns_credit(self.first_sent_at, placed_at.unwrap_or(at)) => {
                    match self.status {
                        RunStatus::Stopped => return Ok(()),
                        _ => vec![RunEvent::Stopped {
                            reason: StopReason::OrderPlaced,
                            at,
                        }],
                    }
                }
                // A run that stopped (even after its last step) still gets the credit for an
                // order it led to.
                _ => vec![RunEvent::Converted {
                    order_id,
                    revenue,
                    at,
                }],
            },
            RunCommand::ReverseConversion {
                order_id,
                status,
                at,
            } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                RunStatus::Converted if self.credited_order.as_ref() == Some(&order_id) => {
                    vec![RunEvent::ConversionReversed {
                        order_id,
                        status,
                        at,
                    }]
                }
                _ => return Ok(()),
            },
            RunCommand::ReportDelivery {
                message_key,
                mut report,
                at,
            } => {
                if self.status == RunStatus::New {
                    return Err(RunError::NotFound);
                }
                if self.reports.contains(&report.dedupe_key(&message_key)) {
                    return Ok(());
                }
                report.detail = report.detail.map(|d| d.chars().take(300).collect());
                vec![RunEvent::DeliveryReported {
                    message_key,
                    report,
                    at,
                }]
            }
            RunCommand::ExpireCoupon { code, at } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                _ if self.expired_coupons.contains(&code) => return Ok(()),
                _ => vec![RunEvent::CouponExpired { code, at }],
            },
            // A click is a fact whatever state the run is in (analytics count it).
            RunCommand::RecordRestore {
                message_key,
                outcome,
                at,
            } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                _ => vec![RunEvent::RestoreClicked {
                    message_key,
                    outcome,
                    at,
                }],
            },
            RunCommand::Stop { reason, at } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                RunStatus::Converted | RunStatus::Stopped => return Ok(()),
                _ => vec![RunEvent::Stopped { reason, at }],
            },
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RunEvent::Started {
                start, next_due_at, ..
            } => {
                self.id = start.run_id.clone();
                self.start = Some(*start);
                self.status = RunStatus::Pending;
                self.next_due_at = Some(next_due_at);
            }
            RunEvent::Claimed {
                step,
                attempt,
                message_key,
                at,
                ..
            } => {
                self.status = RunStatus::Running;
                self.claim = Some(Claim {
                    step,
                    attempt,
                    message_key,
                    at,
                });
            }
            RunEvent::Dispatched {
                next_due_at, at, ..
            } => {
                self.first_sent_at.get_or_insert(at);
                self.claim = None;
                self.next_step += 1;
                self.attempts = 0;
                self.next_due_at = next_due_at;
                self.status = RunStatus::Pending;
            }
            RunEvent::Failed {
                retry_at,
                next_due_at,
                attempt,
                ..
            } => {
                self.claim = None;
                if retry_at.is_some() {
                    self.attempts = attempt;
                } else {
                    self.next_step += 1;
                    self.attempts = 0;
                }
                self.next_due_at = next_due_at;
                self.status = RunStatus::Pending;
            }
            RunEvent::Converted { order_id, .. } => {
                self.claim = None;
                self.next_due_at = None;
                self.status = RunStatus::Converted;
                self.credited_order = order_id;
            }
            RunEvent::ConversionReversed { order_id, .. } => {
                self.credited_order = None;
                self.reversed_orders.push(order_id);
                self.status = RunStatus::Stopped;
            }
            RunEvent::Stopped { .. } => {
                self.claim = None;
                self.next_due_at = None;
                self.status = RunStatus::Stopped;
            }
            RunEvent::CouponExpired { code, .. } => self.expired_coupons.push(code),
            RunEvent::DeliveryReported {
                message_key,
                report,
                ..
            } => self.reports.push(report.dedupe_key(&message_key)),
            RunEvent::RestoreClicked { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::default_steps;
    use cqrs_es::test::TestFramework;

    type RunTest = TestFramework<RecoveryRun>;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn start() -> Box<RunStart> {
        Box::new(RunStart {
            run_id: "run1".into(),
            cart_id: "cart1".into(),
            sequence_id: "default".into(),
            steps: default_steps(),
            abandoned_at: t0(),
            email_hash: Some("h".into()),
            phone_hash: None,
        })
    }

    fn started() -> RunEvent {
        RunEvent::Started {
            start: start(),
            next_due_at: t0() + Duration::minutes(45),
            at: t0(),
        }
    }

    fn claimed(step: u32, attempt: u32, at: DateTime<Utc>) -> RunEvent {
        RunEvent::Claimed {
            step,
            attempt,
            message_key: message_key("run1", step, attempt),
            channel: Channel::Email,
            resumed: false,
            at,
        }
    }

    fn claim(at: DateTime<Utc>) -> RunCommand {
        RunCommand::Claim {
            at,
            stale_after: Duration::minutes(10),
        }
    }

    #[test]
    fn the_first_step_falls_due_its_delay_after_abandonment() {
        RunTest::with(())
            .given_no_previous_events()
            .when(RunCommand::Start {
                start: start(),
                at: t0() + Duration::minutes(5),
            })
            .then_expect_events(vec![RunEvent::Started {
                start: start(),
                next_due_at: t0() + Duration::minutes(45),
                at: t0() + Duration::minutes(5),
            }]);
        RunTest::with(())
            .given(vec![started()])
            .when(claim(t0() + Duration::minutes(44)))
            .then_expect_error(RunError::NotDue(t0() + Duration::minutes(45)));
    }

    #[test]
    fn a_claimed_step_cannot_be_claimed_again_until_the_claim_is_stale() {
        let at = t0() + Duration::minutes(45);
        RunTest::with(())
            .given(vec![started()])
            .when(claim(at))
            .then_expect_events(vec![claimed(1, 1, at)]);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(claim(at + Duration::minutes(1)))
            .then_expect_error(RunError::Claimed { step: 1, at });
        // A crashed dispatcher's claim is taken over with the same message key.
        let later = at + Duration::minutes(11);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(claim(later))
            .then_expect_events(vec![RunEvent::Claimed {
                step: 1,
                attempt: 1,
                message_key: message_key("run1", 1, 1),
                channel: Channel::Email,
                resumed: true,
                at: later,
            }]);
    }

    #[test]
    fn a_sent_step_schedules_the_next_and_the_last_completes_the_run() {
        let at = t0() + Duration::minutes(45);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(RunCommand::RecordSent {
                message_key: message_key("run1", 1, 1),
                links: LinkHashes::default(),
                coupon: None,
                at,
            })
            .then_expect_events(vec![RunEvent::Dispatched {
                step: 1,
                attempt: 1,
                message_key: message_key("run1", 1, 1),
                channel: Channel::Email,
                template: "recovery_email_1".into(),
                links: LinkHashes::default(),
                coupon: None,
                next_due_at: Some(t0() + Duration::hours(24)),
                at,
            }]);
        // After downtime, overdue steps still go out, 15 minutes apart.
        let late = t0() + Duration::hours(80);
        let mut given = vec![started()];
        for (step, at) in [(1, late), (2, late + Duration::minutes(15))] {
            given.push(claimed(step, 1, at));
            given.push(RunEvent::Dispatched {
                step,
                attempt: 1,
                message_key: message_key("run1", step, 1),
                channel: Channel::Email,
                template: format!("recovery_email_{step}"),
                links: LinkHashes::default(),
                coupon: None,
                next_due_at: Some(at + Duration::minutes(15)),
                at,
            });
        }
        let third = late + Duration::minutes(30);
        given.push(claimed(3, 1, third));
        RunTest::with(())
            .given(given)
            .when(RunCommand::RecordSent {
                message_key: message_key("run1", 3, 1),
                links: LinkHashes::default(),
                coupon: None,
                at: third,
            })
            .then_expect_events(vec![
                RunEvent::Dispatched {
                    step: 3,
                    attempt: 1,
                    message_key: message_key("run1", 3, 1),
                    channel: Channel::Email,
                    template: "recovery_email_3".into(),
                    links: LinkHashes::default(),
                    coupon: None,
                    next_due_at: None,
                    at: third,
                },
                RunEvent::Stopped {
                    reason: StopReason::Completed,
                    at: third,
                },
            ]);
    }

    #[test]
    fn failures_retry_fifteen_minutes_times_the_attempt_then_move_on() {
        let at = t0() + Duration::minutes(45);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(RunCommand::RecordFailed {
                message_key: message_key("run1", 1, 1),
                error: "421 try later".into(),
                at,
            })
            .then_expect_events(vec![RunEvent::Failed {
                step: 1,
                attempt: 1,
                message_key: message_key("run1", 1, 1),
                error: "421 try later".into(),
                retry_at: Some(at + Duration::minutes(15)),
                next_due_at: Some(at + Duration::minutes(15)),
                at,
            }]);
        let failed = |attempt: u32, at: DateTime<Utc>, retry: i64| RunEvent::Failed {
            step: 1,
            attempt,
            message_key: message_key("run1", 1, attempt),
            error: "x".into(),
            retry_at: Some(at + Duration::minutes(retry)),
            next_due_at: Some(at + Duration::minutes(retry)),
            at,
        };
        let third = at + Duration::minutes(45);
        RunTest::with(())
            .given(vec![
                started(),
                claimed(1, 1, at),
                failed(1, at, 15),
                claimed(1, 2, at + Duration::minutes(15)),
                failed(2, at + Duration::minutes(15), 30),
                claimed(1, 3, third),
            ])
            .when(RunCommand::RecordFailed {
                message_key: message_key("run1", 1, 3),
                error: "x".into(),
                at: third,
            })
            .then_expect_events(vec![RunEvent::Failed {
                step: 1,
                attempt: 3,
                message_key: message_key("run1", 1, 3),
                error: "x".into(),
                retry_at: None,
                next_due_at: Some(t0() + Duration::hours(24)),
                at: third,
            }]);
    }

    #[test]
    fn which_run_earns_an_orders_credit() {
        let m = |minutes: i64| t0() + Duration::minutes(minutes);
        // (rule, first message sent at, order placed at, credited)
        let table = [
            (
                "a run that sent before the order earns it",
                Some(m(45)),
                m(60),
                true,
            ),
            ("a run that never sent does not", None, m(60), false),
            (
                "a run that sent only after the order does not",
                Some(m(90)),
                m(60),
                false,
            ),
            (
                "a message sent the same instant as the order counts",
                Some(m(60)),
                m(60),
                true,
            ),
            (
                "a message sent within the second the store names counts",
                Some(m(60) + Duration::milliseconds(700)),
                m(60),
                true,
            ),
            (
                "a message sent the second after the order does not",
                Some(m(60) + Duration::seconds(1)),
                m(60),
                false,
            ),
        ];
        for (rule, sent, placed, credited) in table {
            assert_eq!(run_earns_credit(sent, placed), credited, "{rule}");
        }
    }

    fn sent_first_step(at: DateTime<Utc>) -> Vec<RunEvent> {
        vec![
            started(),
            claimed(1, 1, at),
            RunEvent::Dispatched {
                step: 1,
                attempt: 1,
                message_key: message_key("run1", 1, 1),
                channel: Channel::Email,
                template: "recovery_email_1".into(),
                links: LinkHashes::default(),
                coupon: None,
                next_due_at: Some(t0() + Duration::hours(24)),
                at,
            },
        ]
    }

    fn convert(placed_at: DateTime<Utc>) -> RunCommand {
        RunCommand::Convert {
            order_id: Some("1001".into()),
            revenue: Some(2500),
            placed_at: Some(placed_at),
            at: placed_at + Duration::minutes(1),
        }
    }

    #[test]
    fn an_order_before_any_message_stops_the_run_without_credit() {
        let placed = t0() + Duration::minutes(40);
        RunTest::with(())
            .given(vec![started()])
            .when(convert(placed))
            .then_expect_events(vec![RunEvent::Stopped {
                reason: StopReason::OrderPlaced,
                at: placed + Duration::minutes(1),
            }]);
        let sent = t0() + Duration::minutes(45);
        RunTest::with(())
            .given(sent_first_step(sent))
            .when(convert(sent + Duration::minutes(10)))
            .then_expect_events(vec![RunEvent::Converted {
                order_id: Some("1001".into()),
                revenue: Some(2500),
                at: sent + Duration::minutes(11),
            }]);
    }

    #[test]
    fn a_reversed_order_takes_the_credit_back_once_and_never_credits_again() {
        let sent = t0() + Duration::minutes(45);
        let mut given = sent_first_step(sent);
        given.push(RunEvent::Converted {
            order_id: Some("1001".into()),
            revenue: Some(2500),
            at: sent + Duration::minutes(11),
        });
        let reverse = |order: &str| RunCommand::ReverseConversion {
            order_id: order.into(),
            status: "cancelled".into(),
            at: sent + Duration::hours(2),
        };
        RunTest::with(())
            .given(given.clone())
            .when(reverse("other"))
            .then_expect_events(vec![]);
        RunTest::with(())
            .given(given.clone())
            .when(reverse("1001"))
            .then_expect_events(vec![RunEvent::ConversionReversed {
                order_id: "1001".into(),
                status: "cancelled".into(),
                at: sent + Duration::hours(2),
            }]);
        given.push(RunEvent::ConversionReversed {
            order_id: "1001".into(),
            status: "cancelled".into(),
            at: sent + Duration::hours(2),
        });
        RunTest::with(())
            .given(given.clone())
            .when(reverse("1001"))
            .then_expect_events(vec![]);
        // A replayed conversion of the reversed order changes nothing.
        RunTest::with(())
            .given(given)
            .when(convert(sent + Duration::minutes(10)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_ended_run_claims_nothing_and_stops_once() {
        let at = t0() + Duration::minutes(45);
        let stopped = RunEvent::Stopped {
            reason: StopReason::Unsubscribed,
            at,
        };
        RunTest::with(())
            .given(vec![started(), stopped.clone()])
            .when(claim(at))
            .then_expect_error(RunError::Ended("stopped"));
        RunTest::with(())
            .given(vec![started(), stopped])
            .when(RunCommand::Stop {
                reason: StopReason::Manual,
                at,
            })
            .then_expect_events(vec![]);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(RunCommand::RecordSent {
                message_key: message_key("run1", 1, 2),
                links: LinkHashes::default(),
                coupon: None,
                at,
            })
            .then_expect_error(RunError::NoSuchClaim(message_key("run1", 1, 2)));
    }
}
