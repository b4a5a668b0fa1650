//! The `UpsellAcceptance` aggregate: commands, events and the rules between them.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::money::Money;
use crate::values::{Currency, ProductId};

/// The most refunds one acceptance records (partial refunds add up to the charge at most).
pub const MAX_REFUNDS: usize = 50;

/// The acceptance of one offer step of one parent order: `acc_` and 32 hex digits of
/// sha256(parent order, funnel, step). Each part is length-prefixed, so no two triples share
/// an id.
pub fn acceptance_id(parent_order_id: &str, funnel_id: &str, step: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [parent_order_id, funnel_id, step] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    format!("acc_{}", hex::encode(&digest[..16]))
}

/// The gateway idempotency key of an acceptance's charge: the same for every call, retry and
/// reconciliation of that charge (Stripe `Idempotency-Key`, PayPal `PayPal-Request-Id`).
pub fn charge_key(acceptance_id: &str) -> String {
    format!("ocart-{acceptance_id}-charge")
}

/// The gateway idempotency key of one refund of an acceptance.
pub fn refund_key(acceptance_id: &str, refund_id: &str) -> String {
    format!("ocart-{acceptance_id}-refund-{refund_id}")
}

/// Whether the step's offer is an upsell or the downsell after a declined upsell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpsellKind {
    Upsell,
    Downsell,
}

/// How the accepted offer reaches the store (`upsells.order_strategy_default`): `A` a child
/// order of the parent; `B` the line merged into the parent within `upsells.merge_cutoff_min`
/// of its placement, else a child order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStrategy {
    A,
    B,
}

impl OrderStrategy {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw.trim() {
            "A" | "a" => Some(Self::A),
            "B" | "b" => Some(Self::B),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::A => "A",
            Self::B => "B",
        }
    }
}

/// Where an acceptance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptanceStatus {
    /// Accepted; the charge is being made (or about to be).
    Charging,
    /// The gateway wants the shopper (3DS, PayPal payer action).
    RequiresAction,
    /// The outcome of the charge is not known yet; being reconciled. Shown as "processing".
    Unknown,
    /// Charged; the store order is being written.
    Succeeded,
    /// Charged and written to the store: `upsell/accepted`.
    Accepted,
    /// The gateway refused the charge for good.
    Declined,
    /// The shopper declined the offer.
    DeclinedByShopper,
}

impl AcceptanceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charging => "charging",
            Self::RequiresAction => "requires_action",
            Self::Unknown => "unknown",
            Self::Succeeded => "succeeded",
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::DeclinedByShopper => "declined_by_shopper",
        }
    }

    /// What the shopper is shown: `processing` while the outcome is open (never `declined`
    /// for an unknown outcome), `requires_action`, `succeeded` once charged, `declined`, or
    /// `declined_by_shopper`.
    pub fn shown(self) -> &'static str {
        match self {
            Self::Charging | Self::Unknown => "processing",
            Self::RequiresAction => "requires_action",
            Self::Succeeded | Self::Accepted => "succeeded",
            Self::Declined => "declined",
            Self::DeclinedByShopper => "declined_by_shopper",
        }
    }
}

/// A charge's outcome as the charger records it (the gateway adapter's answer, in domain
/// terms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChargeResult {
    Succeeded {
        charge_ref: String,
    },
    RequiresAction {
        charge_ref: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action_url: Option<String>,
    },
    Declined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        charge_ref: Option<String>,
        code: String,
        message: String,
    },
    Unknown {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        charge_ref: Option<String>,
        reason: String,
    },
}

/// A refund's outcome at the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RefundResult {
    Refunded { refund_ref: String },
    Failed { code: String, message: String },
}

/// What an accept carries, validated at the edge (the token checked, the offer eligible and
/// priced, the parent order paid with a saved payment method).
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptInput {
    pub offer_id: String,
    pub kind: UpsellKind,
    pub funnel_id: String,
    pub step: String,
    pub parent_order_id: String,
    /// The one-click token's single-use id: burned by this decision.
    pub jti: String,
    pub product_id: ProductId,
    pub product_name: String,
    pub quantity: u32,
    /// What the shopper pays for the offer.
    pub price: Money,
    /// The parent order's saved payment: gateway, customer, payment method.
    pub gateway: String,
    pub customer: Option<String>,
    pub payment_method: String,
    pub strategy: OrderStrategy,
    /// The HTTP `Idempotency-Key` and the sha256 of the request body, if the client sent a
    /// key: a repeat with the same key and body answers this acceptance; with another body 422.
    pub request_key: Option<String>,
    pub request_hash: Option<String>,
    pub at: DateTime<Utc>,
}

/// What a decline carries.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclineInput {
    pub offer_id: String,
    pub kind: UpsellKind,
    pub funnel_id: String,
    pub step: String,
    pub parent_order_id: String,
    pub jti: String,
    pub request_key: Option<String>,
    pub request_hash: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UpsellCommand {
    Accept(Box<AcceptInput>),
    Decline(Box<DeclineInput>),
    /// The charger's record of what the gateway answered (a charge, a replay, a read-back, the
    /// completion after the shopper's action, a webhook).
    RecordCharge {
        result: ChargeResult,
        at: DateTime<Utc>,
    },
    /// The store order the charge went to: a child order, or the parent merged.
    RecordOrderWritten {
        order_id: String,
        strategy: OrderStrategy,
        at: DateTime<Utc>,
    },
    /// Asks for a refund of `amount` (minor units) of the upsell's own charge.
    Refund {
        refund_id: String,
        amount: i64,
        reason: Option<String>,
        at: DateTime<Utc>,
    },
    /// The gateway's answer to a requested refund.
    RecordRefund {
        refund_id: String,
        result: RefundResult,
        at: DateTime<Utc>,
    },
    /// The refund noted on the store order (no second gateway refund).
    RecordStoreRefund {
        refund_id: String,
        store_refund_id: String,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UpsellEvent {
    /// The shopper accepted; the charge with this idempotency key is about to be made. Recorded
    /// before any gateway call.
    #[serde(rename = "upsell/before_charge")]
    BeforeCharge {
        acceptance_id: String,
        offer_id: String,
        kind: UpsellKind,
        funnel_id: String,
        step: String,
        parent_order_id: String,
        jti: String,
        product_id: ProductId,
        product_name: String,
        quantity: u32,
        amount: i64,
        currency: Currency,
        gateway: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        customer: Option<String>,
        payment_method: String,
        idempotency_key: String,
        strategy: OrderStrategy,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_hash: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "upsell/charge_succeeded")]
    ChargeSucceeded {
        acceptance_id: String,
        offer_id: String,
        charge_ref: String,
        amount: i64,
        currency: Currency,
        at: DateTime<Utc>,
    },
    #[serde(rename = "upsell/charge_requires_action")]
    ChargeRequiresAction {
        acceptance_id: String,
        charge_ref: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action_url: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "upsell/charge_declined")]
    ChargeDeclined {
        acceptance_id: String,
        offer_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        charge_ref: Option<String>,
        code: String,
        message: String,
        at: DateTime<Utc>,
    },
    /// The gateway's answer could not be read as a decision; `attempt` counts these.
    #[serde(rename = "upsell/charge_unknown")]
    ChargeUnknown {
        acceptance_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        charge_ref: Option<String>,
        reason: String,
        attempt: u32,
        at: DateTime<Utc>,
    },
    /// Charged and written to the store: the child order (or the merged parent).
    #[serde(rename = "upsell/accepted")]
    Accepted {
        acceptance_id: String,
        offer_id: String,
        parent_order_id: String,
        child_order_id: String,
        strategy: OrderStrategy,
        charge_ref: String,
        amount: i64,
        currency: Currency,
        at: DateTime<Utc>,
    },
    #[serde(rename = "upsell/declined")]
    Declined {
        acceptance_id: String,
        offer_id: String,
        kind: UpsellKind,
        funnel_id: String,
        step: String,
        parent_order_id: String,
        jti: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_hash: Option<String>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "upsell/refund_requested")]
    RefundRequested {
        acceptance_id: String,
        refund_id: String,
        charge_ref: String,
        gateway: String,
        amount: i64,
        currency: Currency,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        idempotency_key: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "upsell/refunded")]
    Refunded {
        acceptance_id: String,
        offer_id: String,
        refund_id: String,
        refund_ref: String,
        amount: i64,
        currency: Currency,
        at: DateTime<Utc>,
    },
    #[serde(rename = "upsell/refund_failed")]
    RefundFailed {
        acceptance_id: String,
        refund_id: String,
        code: String,
        message: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "upsell/store_refund_recorded")]
    StoreRefundRecorded {
        acceptance_id: String,
        refund_id: String,
        store_refund_id: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for UpsellEvent {
    fn event_type(&self) -> String {
        match self {
            Self::BeforeCharge { .. } => "upsell/before_charge",
            Self::ChargeSucceeded { .. } => "upsell/charge_succeeded",
            Self::ChargeRequiresAction { .. } => "upsell/charge_requires_action",
            Self::ChargeDeclined { .. } => "upsell/charge_declined",
            Self::ChargeUnknown { .. } => "upsell/charge_unknown",
            Self::Accepted { .. } => "upsell/accepted",
            Self::Declined { .. } => "upsell/declined",
            Self::RefundRequested { .. } => "upsell/refund_requested",
            Self::Refunded { .. } => "upsell/refunded",
            Self::RefundFailed { .. } => "upsell/refund_failed",
            Self::StoreRefundRecorded { .. } => "upsell/store_refund_recorded",
        }
        .into()
    }

    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpsellError {
    /// The step was decided already (accepted or declined): one decision per (parent order,
    /// step), whatever the idempotency keys.
    #[error("this offer step of the order was already {0}")]
    AlreadyDecided(&'static str),
    #[error("there is no acceptance")]
    NotFound,
    #[error("the charge is {0}; the order cannot be written")]
    NotCharged(&'static str),
    #[error("the acceptance is {0}; only an accepted upsell can be refunded")]
    NotRefundable(&'static str),
    #[error("the refund must be between 1 and {left} (what is left of the charge)")]
    RefundTooLarge { left: i64 },
    #[error("a refund with this id was already requested with another amount")]
    RefundIdReused,
    #[error("no refund {0} was requested")]
    UnknownRefund(String),
    #[error("at most {MAX_REFUNDS} refunds per acceptance")]
    TooManyRefunds,
}

/// Where one refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    Requested,
    Refunded,
    Failed,
}

/// One refund of an acceptance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundState {
    pub refund_id: String,
    pub amount: i64,
    pub status: RefundStatus,
    pub refund_ref: Option<String>,
    pub store_refund_id: Option<String>,
}

/// An acceptance's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpsellAcceptance {
    id: String,
    status: Option<AcceptanceStatus>,
    offer_id: String,
    parent_order_id: String,
    gateway: String,
    amount: i64,
    currency: Option<Currency>,
    charge_ref: Option<String>,
    child_order_id: Option<String>,
    request_key: Option<String>,
    request_hash: Option<String>,
    unknown_attempts: u32,
    refunds: Vec<RefundState>,
    /// The funnel and step the decision was made at, and the offer's kind.
    #[serde(default)]
    funnel_id: String,
    #[serde(default)]
    step: String,
    #[serde(default)]
    kind: Option<UpsellKind>,
    /// Where the gateway sends the shopper for the action it asked for, if it said.
    #[serde(default)]
    action_url: Option<String>,
    /// When the shopper decided (accepted or declined).
    #[serde(default)]
    decided_at: Option<DateTime<Utc>>,
}

impl UpsellAcceptance {
    pub fn status(&self) -> Option<AcceptanceStatus> {
        self.status
    }
    pub fn id(&self) -> &str {
        &self.id
    }
    pub fn offer_id(&self) -> &str {
        &self.offer_id
    }
    pub fn parent_order_id(&self) -> &str {
        &self.parent_order_id
    }
    pub fn gateway(&self) -> &str {
        &self.gateway
    }
    pub fn amount(&self) -> i64 {
        self.amount
    }
    pub fn currency(&self) -> Option<Currency> {
        self.currency
    }
    pub fn charge_ref(&self) -> Option<&str> {
        self.charge_ref.as_deref()
    }
    pub fn child_order_id(&self) -> Option<&str> {
        self.child_order_id.as_deref()
    }
    /// The HTTP idempotency key and body hash the decision was made with, if any.
    pub fn request(&self) -> (Option<&str>, Option<&str>) {
        (self.request_key.as_deref(), self.request_hash.as_deref())
    }
    pub fn unknown_attempts(&self) -> u32 {
        self.unknown_attempts
    }
    /// The funnel the decision was made in.
    pub fn funnel_id(&self) -> &str {
        &self.funnel_id
    }
    /// The funnel step the decision was made at.
    pub fn step(&self) -> &str {
        &self.step
    }
    /// Upsell or downsell, once decided.
    pub fn kind(&self) -> Option<UpsellKind> {
        self.kind
    }
    /// The gateway's action URL while it waits for the shopper (3DS, payer action), if any.
    pub fn action_url(&self) -> Option<&str> {
        self.action_url.as_deref()
    }
    /// When the shopper decided (accepted or declined).
    pub fn decided_at(&self) -> Option<DateTime<Utc>> {
        self.decided_at
    }
    pub fn refunds(&self) -> &[RefundState] {
        &self.refunds
    }
    /// Minor units refunded or being refunded (failed refunds do not count).
    pub fn refunded(&self) -> i64 {
        self.refunds
            .iter()
            .filter(|r| r.status != RefundStatus::Failed)
            .map(|r| r.amount)
            .sum()
    }
}

/// The acceptances' aggregate type in the log.
pub const ACCEPTANCE_TYPE: &str = "upsell_acceptance";

impl Aggregate for UpsellAcceptance {
    const TYPE: &'static str = ACCEPTANCE_TYPE;
    type Command = UpsellCommand;
    type Event = UpsellEvent;
    type Error = UpsellError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UpsellEvent::BeforeCharge {
                acceptance_id,
                offer_id,
                kind,
                funnel_id,
                step,
                parent_order_id,
                gateway,
                amount,
                currency,
                request_key,
                request_hash,
                at,
                ..
            } => {
                self.id = acceptance_id;
                self.funnel_id = funnel_id;
                self.step = step;
                self.kind = Some(kind);
                self.decided_at = Some(at);
                self.status = Some(AcceptanceStatus::Charging);
                self.offer_id = offer_id;
                self.parent_order_id = parent_order_id;
                self.gateway = gateway;
                self.amount = amount;
                self.currency = Some(currency);
                self.request_key = request_key;
                self.request_hash = request_hash;
            }
            UpsellEvent::ChargeSucceeded { charge_ref, .. } => {
                self.status = Some(AcceptanceStatus::Succeeded);
                self.charge_ref = Some(charge_ref);
            }
            UpsellEvent::ChargeRequiresAction {
                charge_ref,
                action_url,
                ..
            } => {
                self.status = Some(AcceptanceStatus::RequiresAction);
                self.charge_ref = Some(charge_ref);
                self.action_url = action_url;
            }
            UpsellEvent::ChargeDeclined { charge_ref, .. } => {
                self.status = Some(AcceptanceStatus::Declined);
                if charge_ref.is_some() {
                    self.charge_ref = charge_ref;
                }
            }
            UpsellEvent::ChargeUnknown {
                charge_ref,
                attempt,
                ..
            } => {
                self.unknown_attempts = attempt;
                if charge_ref.is_some() {
                    self.charge_ref = charge_ref;
                }
                // Waiting for the shopper stays waiting: an unreadable read-back changes
                // nothing about what the gateway asked for.
                if self.status != Some(AcceptanceStatus::RequiresAction) {
                    self.status = Some(AcceptanceStatus::Unknown);
                }
            }
            UpsellEvent::Accepted { child_order_id, .. } => {
                self.status = Some(AcceptanceStatus::Accepted);
                self.child_order_id = Some(child_order_id);
            }
            UpsellEvent::Declined {
                acceptance_id,
                offer_id,
                kind,
                funnel_id,
                step,
                parent_order_id,
                request_key,
                request_hash,
                at,
                ..
            } => {
                self.id = acceptance_id;
                self.funnel_id = funnel_id;
                self.step = step;
                self.kind = Some(kind);
                self.decided_at = Some(at);
                self.status = Some(AcceptanceStatus::DeclinedByShopper);
                self.offer_id = offer_id;
                self.parent_order_id = parent_order_id;
                self.request_key = request_key;
                self.request_hash = request_hash;
            }
            UpsellEvent::RefundRequested {
                refund_id, amount, ..
            } => self.refunds.push(RefundState {
                refund_id,
                amount,
                status: RefundStatus::Requested,
                refund_ref: None,
                store_refund_id: None,
            }),
            UpsellEvent::Refunded {
                refund_id,
                refund_ref,
                ..
            } => {
                if let Some(r) = self.refunds.iter_mut().find(|r| r.refund_id == refund_id) {
                    r.status = RefundStatus::Refunded;
                    r.refund_ref = Some(refund_ref);
                }
            }
            UpsellEvent::RefundFailed { refund_id, .. } => {
                if let Some(r) = self.refunds.iter_mut().find(|r| r.refund_id == refund_id) {
                    r.status = RefundStatus::Failed;
                }
            }
            UpsellEvent::StoreRefundRecorded {
                refund_id,
                store_refund_id,
                ..
            } => {
                if let Some(r) = self.refunds.iter_mut().find(|r| r.refund_id == refund_id) {
                    r.store_refund_id = Some(store_refund_id);
                }
            }
        }
    }
}

impl UpsellAcceptance {
    /// The events a command leads to: the aggregate's rules, without IO.
    fn decide(&self, command: UpsellCommand) -> Result<Vec<UpsellEvent>, UpsellError> {
        use AcceptanceStatus as S;
        let decided = |status: S| {
            if status == S::DeclinedByShopper {
                "declined"
            } else {
                "accepted"
            }
        };
        match command {
            UpsellCommand::Accept(input) => {
                if let Some(status) = self.status {
                    return Err(UpsellError::AlreadyDecided(decided(status)));
                }
                let id = acceptance_id(&input.parent_order_id, &input.funnel_id, &input.step);
                Ok(vec![UpsellEvent::BeforeCharge {
                    idempotency_key: charge_key(&id),
                    acceptance_id: id,
                    offer_id: input.offer_id,
                    kind: input.kind,
                    funnel_id: input.funnel_id,
                    step: input.step,
                    parent_order_id: input.parent_order_id,
                    jti: input.jti,
                    product_id: input.product_id,
                    product_name: input.product_name,
                    quantity: input.quantity,
                    amount: input.price.minor(),
                    currency: input.price.currency(),
                    gateway: input.gateway,
                    customer: input.customer,
                    payment_method: input.payment_method,
                    strategy: input.strategy,
                    request_key: input.request_key,
                    request_hash: input.request_hash,
                    at: input.at,
                }])
            }
            UpsellCommand::Decline(input) => {
                if let Some(status) = self.status {
                    return Err(UpsellError::AlreadyDecided(decided(status)));
                }
                Ok(vec![UpsellEvent::Declined {
                    acceptance_id: acceptance_id(
                        &input.parent_order_id,
                        &input.funnel_id,
                        &input.step,
                    ),
                    offer_id: input.offer_id,
                    kind: input.kind,
                    funnel_id: input.funnel_id,
                    step: input.step,
                    parent_order_id: input.parent_order_id,
                    jti: input.jti,
                    request_key: input.request_key,
                    request_hash: input.request_hash,
                    at: input.at,
                }])
            }
            UpsellCommand::RecordCharge { result, at } => self.record_charge(result, at),
            UpsellCommand::RecordOrderWritten {
                order_id,
                strategy,
                at,
            } => {
                let status = self.status.ok_or(UpsellError::NotFound)?;
                match status {
                    S::Succeeded => Ok(vec![UpsellEvent::Accepted {
                        acceptance_id: self.id.clone(),
                        offer_id: self.offer_id.clone(),
                        parent_order_id: self.parent_order_id.clone(),
                        child_order_id: order_id,
                        strategy,
                        charge_ref: self.charge_ref.clone().unwrap_or_default(),
                        amount: self.amount,
                        currency: self.currency.unwrap_or(Currency::EUR),
                        at,
                    }]),
                    // Written already: a repeat (a crash before the checkpoint) records nothing.
                    S::Accepted => Ok(Vec::new()),
                    other => Err(UpsellError::NotCharged(other.as_str())),
                }
            }
            UpsellCommand::Refund {
                refund_id,
                amount,
                reason,
                at,
            } => {
                let status = self.status.ok_or(UpsellError::NotFound)?;
                if status != S::Accepted {
                    return Err(UpsellError::NotRefundable(status.as_str()));
                }
                if let Some(existing) = self.refunds.iter().find(|r| r.refund_id == refund_id) {
                    return if existing.amount == amount {
                        Ok(Vec::new())
                    } else {
                        Err(UpsellError::RefundIdReused)
                    };
                }
                if self.refunds.len() >= MAX_REFUNDS {
                    return Err(UpsellError::TooManyRefunds);
                }
                let left = self.amount.checked_sub(self.refunded()).unwrap_or(0).max(0);
                if amount < 1 || amount > left {
                    return Err(UpsellError::RefundTooLarge { left });
                }
                Ok(vec![UpsellEvent::RefundRequested {
                    acceptance_id: self.id.clone(),
                    idempotency_key: refund_key(&self.id, &refund_id),
                    refund_id,
                    charge_ref: self.charge_ref.clone().unwrap_or_default(),
                    gateway: self.gateway.clone(),
                    amount,
                    currency: self.currency.unwrap_or(Currency::EUR),
                    reason,
                    at,
                }])
            }
            UpsellCommand::RecordRefund {
                refund_id,
                result,
                at,
            } => {
                let refund = self
                    .refunds
                    .iter()
                    .find(|r| r.refund_id == refund_id)
                    .ok_or_else(|| UpsellError::UnknownRefund(refund_id.clone()))?;
                if refund.status != RefundStatus::Requested {
                    return Ok(Vec::new());
                }
                Ok(vec![match result {
                    RefundResult::Refunded { refund_ref } => UpsellEvent::Refunded {
                        acceptance_id: self.id.clone(),
                        offer_id: self.offer_id.clone(),
                        refund_id,
                        refund_ref,
                        amount: refund.amount,
                        currency: self.currency.unwrap_or(Currency::EUR),
                        at,
                    },
                    RefundResult::Failed { code, message } => UpsellEvent::RefundFailed {
                        acceptance_id: self.id.clone(),
                        refund_id,
                        code,
                        message,
                        at,
                    },
                }])
            }
            UpsellCommand::RecordStoreRefund {
                refund_id,
                store_refund_id,
                at,
            } => {
                let refund = self
                    .refunds
                    .iter()
                    .find(|r| r.refund_id == refund_id)
                    .ok_or_else(|| UpsellError::UnknownRefund(refund_id.clone()))?;
                if refund.store_refund_id.is_some() {
                    return Ok(Vec::new());
                }
                Ok(vec![UpsellEvent::StoreRefundRecorded {
                    acceptance_id: self.id.clone(),
                    refund_id,
                    store_refund_id,
                    at,
                }])
            }
        }
    }

    /// A gateway answer about the charge. Once the charge is decided (succeeded, declined,
    /// written) later answers record nothing: a late webhook or a duplicate read-back cannot
    /// move it.
    fn record_charge(
        &self,
        result: ChargeResult,
        at: DateTime<Utc>,
    ) -> Result<Vec<UpsellEvent>, UpsellError> {
        use AcceptanceStatus as S;
        let status = self.status.ok_or(UpsellError::NotFound)?;
        match status {
            S::Charging | S::Unknown | S::RequiresAction => {}
            S::Succeeded | S::Accepted | S::Declined => return Ok(Vec::new()),
            S::DeclinedByShopper => return Err(UpsellError::AlreadyDecided("declined")),
        }
        let id = self.id.clone();
        let currency = self.currency.unwrap_or(Currency::EUR);
        Ok(vec![match result {
            ChargeResult::Succeeded { charge_ref } => UpsellEvent::ChargeSucceeded {
                acceptance_id: id,
                offer_id: self.offer_id.clone(),
                charge_ref,
                amount: self.amount,
                currency,
                at,
            },
            ChargeResult::RequiresAction {
                charge_ref,
                action_url,
            } => {
                if status == S::RequiresAction && self.charge_ref.as_deref() == Some(&charge_ref) {
                    return Ok(Vec::new());
                }
                UpsellEvent::ChargeRequiresAction {
                    acceptance_id: id,
                    charge_ref,
                    action_url,
                    at,
                }
            }
            ChargeResult::Declined {
                charge_ref,
                code,
                message,
            } => UpsellEvent::ChargeDeclined {
                acceptance_id: id,
                offer_id: self.offer_id.clone(),
                charge_ref,
                code,
                message,
                at,
            },
            ChargeResult::Unknown { charge_ref, reason } => UpsellEvent::ChargeUnknown {
                acceptance_id: id,
                charge_ref,
                reason,
                attempt: self.unknown_attempts.saturating_add(1),
                at,
            },
        }])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn usd(minor: i64) -> Money {
        Money::new(minor, Currency::parse("currency", "USD").unwrap()).unwrap()
    }

    fn accept(key: Option<&str>) -> AcceptInput {
        AcceptInput {
            offer_id: "offer-1".into(),
            kind: UpsellKind::Upsell,
            funnel_id: "main".into(),
            step: "upsell-1".into(),
            parent_order_id: "1001".into(),
            jti: "jti-1".into(),
            product_id: ProductId::text("77").unwrap(),
            product_name: "Mug warmer".into(),
            quantity: 1,
            price: usd(1999),
            gateway: "stripe".into(),
            customer: Some("cus_1".into()),
            payment_method: "pm_1".into(),
            strategy: OrderStrategy::A,
            request_key: key.map(Into::into),
            request_hash: key.map(|_| "h".into()),
            at: at(),
        }
    }

    fn decide(
        given: &[UpsellEvent],
        command: UpsellCommand,
    ) -> Result<Vec<UpsellEvent>, UpsellError> {
        let mut state = UpsellAcceptance::default();
        for event in given {
            state.apply(event.clone());
        }
        state.decide(command)
    }

    fn accepted() -> Vec<UpsellEvent> {
        decide(&[], UpsellCommand::Accept(Box::new(accept(None)))).unwrap()
    }

    fn then(mut given: Vec<UpsellEvent>, command: UpsellCommand) -> Vec<UpsellEvent> {
        let events = decide(&given, command).unwrap();
        given.extend(events);
        given
    }

    fn succeeded() -> Vec<UpsellEvent> {
        then(
            accepted(),
            UpsellCommand::RecordCharge {
                result: ChargeResult::Succeeded {
                    charge_ref: "pi_1".into(),
                },
                at: at(),
            },
        )
    }

    fn written() -> Vec<UpsellEvent> {
        then(
            succeeded(),
            UpsellCommand::RecordOrderWritten {
                order_id: "1002".into(),
                strategy: OrderStrategy::A,
                at: at(),
            },
        )
    }

    #[test]
    fn ids_and_keys_derive_from_the_step_and_never_collide_across_parts() {
        let a = acceptance_id("10", "01", "x");
        assert_eq!(a, acceptance_id("10", "01", "x"), "stable");
        assert_ne!(a, acceptance_id("1", "001", "x"), "length-prefixed parts");
        assert_ne!(a, acceptance_id("10", "01", "y"));
        assert!(a.starts_with("acc_") && a.len() == 36);
        assert_eq!(charge_key(&a), format!("ocart-{a}-charge"));
        assert_ne!(refund_key(&a, "r1"), refund_key(&a, "r2"));
    }

    #[test]
    fn accepting_records_the_charge_key_before_any_gateway_call() {
        let events = accepted();
        let [UpsellEvent::BeforeCharge {
            acceptance_id: id,
            idempotency_key,
            amount,
            ..
        }] = &events[..]
        else {
            panic!("one before_charge: {events:?}");
        };
        assert_eq!(id, &acceptance_id("1001", "main", "upsell-1"));
        assert_eq!(idempotency_key, &charge_key(id));
        assert_eq!(*amount, 1999);
    }

    #[test]
    fn one_decision_per_step_whatever_the_keys() {
        for (rule, given, command, expected) in [
            (
                "a second accept with another key finds the acceptance",
                accepted(),
                UpsellCommand::Accept(Box::new(accept(Some("other")))),
                UpsellError::AlreadyDecided("accepted"),
            ),
            (
                "a decline after an accept is refused",
                accepted(),
                UpsellCommand::Decline(Box::new(DeclineInput {
                    offer_id: "offer-1".into(),
                    kind: UpsellKind::Upsell,
                    funnel_id: "main".into(),
                    step: "upsell-1".into(),
                    parent_order_id: "1001".into(),
                    jti: "jti-2".into(),
                    request_key: None,
                    request_hash: None,
                    at: at(),
                })),
                UpsellError::AlreadyDecided("accepted"),
            ),
        ] {
            assert_eq!(decide(&given, command), Err(expected), "{rule}");
        }
    }

    #[test]
    fn charge_outcomes_move_the_status_and_a_decided_charge_stays_decided() {
        use AcceptanceStatus as S;
        let record = |given: Vec<UpsellEvent>, result: ChargeResult| {
            let events = then(given, UpsellCommand::RecordCharge { result, at: at() });
            let mut state = UpsellAcceptance::default();
            for e in &events {
                state.apply(e.clone());
            }
            (events, state)
        };
        let unknown = ChargeResult::Unknown {
            charge_ref: None,
            reason: "timeout".into(),
        };
        let ok = ChargeResult::Succeeded {
            charge_ref: "pi_1".into(),
        };
        let (events, state) = record(accepted(), unknown.clone());
        assert_eq!(state.status(), Some(S::Unknown));
        assert_eq!(
            S::Unknown.shown(),
            "processing",
            "unknown is never shown as declined"
        );
        let (events, state) = record(events, unknown);
        assert_eq!(state.unknown_attempts(), 2);
        let (events, state) = record(events, ok.clone());
        assert_eq!(state.status(), Some(S::Succeeded));
        assert_eq!(state.charge_ref(), Some("pi_1"));
        let declined = ChargeResult::Declined {
            charge_ref: None,
            code: "card_declined".into(),
            message: "no".into(),
        };
        let len = events.len();
        let (after, state) = record(events, declined);
        assert_eq!(
            after.len(),
            len,
            "a late answer after success records nothing"
        );
        assert_eq!(state.status(), Some(S::Succeeded));

        let action = ChargeResult::RequiresAction {
            charge_ref: "pi_2".into(),
            action_url: Some("https://hooks.stripe.test/3ds".into()),
        };
        let (events, state) = record(accepted(), action.clone());
        assert_eq!(state.status(), Some(S::RequiresAction));
        let len = events.len();
        let (events, _) = record(events, action);
        assert_eq!(events.len(), len, "the same action again records nothing");
        let (_, state) = record(
            events,
            ChargeResult::Unknown {
                charge_ref: Some("pi_2".into()),
                reason: "reset".into(),
            },
        );
        assert_eq!(
            state.status(),
            Some(S::RequiresAction),
            "waiting for the shopper stays waiting"
        );
    }

    #[test]
    fn the_order_is_written_once_and_only_after_the_charge() {
        assert_eq!(
            decide(
                &accepted(),
                UpsellCommand::RecordOrderWritten {
                    order_id: "1002".into(),
                    strategy: OrderStrategy::A,
                    at: at(),
                }
            ),
            Err(UpsellError::NotCharged("charging"))
        );
        let events = written();
        assert!(matches!(
            events.last(),
            Some(UpsellEvent::Accepted { child_order_id, parent_order_id, .. })
                if child_order_id == "1002" && parent_order_id == "1001"
        ));
        assert_eq!(
            decide(
                &events,
                UpsellCommand::RecordOrderWritten {
                    order_id: "1003".into(),
                    strategy: OrderStrategy::A,
                    at: at(),
                }
            ),
            Ok(Vec::new()),
            "a repeat records nothing"
        );
    }

    #[test]
    fn refunds_are_bounded_by_the_charge_and_idempotent_by_id() {
        let refund = |id: &str, amount| UpsellCommand::Refund {
            refund_id: id.into(),
            amount,
            reason: None,
            at: at(),
        };
        assert_eq!(
            decide(&succeeded(), refund("r1", 100)),
            Err(UpsellError::NotRefundable("succeeded"))
        );
        let events = then(written(), refund("r1", 1000));
        assert!(matches!(
            events.last(),
            Some(UpsellEvent::RefundRequested { charge_ref, idempotency_key, .. })
                if charge_ref == "pi_1" && idempotency_key.ends_with("-refund-r1")
        ));
        assert_eq!(
            decide(&events, refund("r1", 1000)),
            Ok(Vec::new()),
            "a repeat"
        );
        assert_eq!(
            decide(&events, refund("r1", 5)),
            Err(UpsellError::RefundIdReused)
        );
        assert_eq!(
            decide(&events, refund("r2", 1000)),
            Err(UpsellError::RefundTooLarge { left: 999 })
        );
        assert_eq!(
            decide(&events, refund("r2", 0)),
            Err(UpsellError::RefundTooLarge { left: 999 })
        );
        let events = then(
            events,
            UpsellCommand::RecordRefund {
                refund_id: "r1".into(),
                result: RefundResult::Failed {
                    code: "x".into(),
                    message: "y".into(),
                },
                at: at(),
            },
        );
        assert!(
            decide(&events, refund("r2", 1999)).is_ok(),
            "a failed refund gives its amount back"
        );
    }

    #[test]
    fn the_state_keeps_where_and_when_the_decision_was_made_and_the_action_url() {
        let mut state = UpsellAcceptance::default();
        for e in then(
            accepted(),
            UpsellCommand::RecordCharge {
                result: ChargeResult::RequiresAction {
                    charge_ref: "pi_9".into(),
                    action_url: Some("https://hooks.stripe.test/3ds".into()),
                },
                at: at(),
            },
        ) {
            state.apply(e);
        }
        assert_eq!(
            (state.funnel_id(), state.step(), state.kind()),
            ("main", "upsell-1", Some(UpsellKind::Upsell))
        );
        assert_eq!(state.decided_at(), Some(at()));
        assert_eq!(state.action_url(), Some("https://hooks.stripe.test/3ds"));
    }

    #[test]
    fn the_framework_sees_the_same_rules() {
        TestFramework::<UpsellAcceptance>::with(())
            .given(accepted())
            .when(UpsellCommand::Accept(Box::new(accept(Some("k2")))))
            .then_expect_error(UpsellError::AlreadyDecided("accepted"));
        TestFramework::<UpsellAcceptance>::with(())
            .given_no_previous_events()
            .when(UpsellCommand::RecordCharge {
                result: ChargeResult::Succeeded {
                    charge_ref: "pi".into(),
                },
                at: at(),
            })
            .then_expect_error(UpsellError::NotFound);
    }
}
