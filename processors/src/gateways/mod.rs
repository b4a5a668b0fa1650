//! Payment gateways (issue 11): the one contract the upsell charger, reconciliation, the SCA
//! confirmation and refunds speak, and its adapters — Stripe (PaymentIntents), PayPal (Orders
//! v2) and the sandbox (the embedded default, so `ocart serve` runs the whole flow with no
//! account).
//!
//! The rules every adapter keeps:
//! - A charge carries the idempotency key OCart recorded in the log before the call
//!   (`upsell/before_charge`); every retry and every reconciliation sends the same key with
//!   the same parameters, so the gateway answers the first outcome instead of charging again.
//! - An answer the adapter cannot read as a decision (a timeout, a reset connection, a 5xx, a
//!   body it cannot parse) is [`ChargeOutcome::Unknown`], never `Declined`: the charge may have
//!   happened, and the charger reconciles it (the same request again, or a read-back).
//! - Credentials never reach `Debug`, logs or the event log.

use async_trait::async_trait;
use ocart_domain::Money;
use serde::{Deserialize, Serialize};

/// The `ChargeRequest::metadata` key that names the acceptance a charge is for: kept on the
/// payment (Stripe metadata, PayPal `custom_id`), so a webhook finds its acceptance.
pub const ACCEPTANCE_METADATA: &str = "ocart_acceptance_id";

/// A charge against a saved payment method: one acceptance, one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Derived from the acceptance and recorded in the log before the first call; the same on
    /// every retry (Stripe `Idempotency-Key`, PayPal `PayPal-Request-Id`).
    pub idempotency_key: String,
    /// What to charge, in minor units of its currency.
    pub amount: Money,
    /// The gateway's customer (Stripe `cus_…`; PayPal: none, the vault id carries it).
    pub customer: Option<String>,
    /// The saved payment method (Stripe `pm_…`, PayPal vault id, sandbox test method).
    pub payment_method: String,
    /// Shown on the buyer's statement / in the gateway's dashboard.
    pub description: String,
    /// Unique per acceptance (PayPal `invoice_id`; Stripe metadata).
    pub invoice_id: String,
    /// Where the gateway sends the shopper back after a 3DS / payer action.
    pub return_url: Option<String>,
    /// Kept on the payment for people reading the gateway's dashboard: acceptance id, parent
    /// order, offer.
    pub metadata: Vec<(String, String)>,
}

/// What a gateway answered about a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChargeOutcome {
    /// Charged. `charge_ref` is what a refund and a read-back name (Stripe PaymentIntent id,
    /// PayPal order id).
    Succeeded { charge_ref: String },
    /// The issuer wants the shopper (3DS, PayPal payer action). `action_url` is where to send
    /// them (a redirect); `client_secret` lets an in-page step (Stripe.js) run it instead.
    RequiresAction {
        charge_ref: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        action_url: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<String>,
    },
    /// Refused for good (card declined, insufficient funds, instrument declined). `code` is
    /// the gateway's (`card_declined`, `insufficient_funds`, `INSTRUMENT_DECLINED`).
    Declined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        charge_ref: Option<String>,
        code: String,
        message: String,
    },
    /// Not known: the charge may or may not have happened. Never shown as declined.
    Unknown {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        charge_ref: Option<String>,
        reason: String,
    },
}

impl ChargeOutcome {
    /// The gateway's reference, when the answer named one.
    pub fn charge_ref(&self) -> Option<&str> {
        match self {
            Self::Succeeded { charge_ref } | Self::RequiresAction { charge_ref, .. } => {
                Some(charge_ref)
            }
            Self::Declined { charge_ref, .. } | Self::Unknown { charge_ref, .. } => {
                charge_ref.as_deref()
            }
        }
    }
}

/// A refund of (part of) one charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// Derived from the refund recorded in the log; the same on every retry.
    pub idempotency_key: String,
    /// The charge to refund: the upsell's own, never the parent order's.
    pub charge_ref: String,
    pub amount: Money,
    pub reason: Option<String>,
}

/// What a gateway answered about a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RefundOutcome {
    Refunded { refund_ref: String },
    Failed { code: String, message: String },
    Unknown { reason: String },
}

/// How an adapter is doing, for `GET /ocart/v1/gateways` and `ocart gateway status`. Never
/// carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayState {
    /// `stripe`, `paypal` or `sandbox`.
    pub id: &'static str,
    /// `live`, `test` or `sandbox`.
    pub mode: &'static str,
    /// The API base it talks to (no credentials).
    pub api_base: String,
    /// Whether inbound webhooks can be verified (a signing secret / webhook id is set).
    pub webhooks: bool,
}

/// One payment gateway.
#[async_trait]
pub trait Gateway: Send + Sync {
    /// `stripe`, `paypal` or `sandbox`: what a parent order's `payment.gateway` names.
    fn id(&self) -> &'static str;

    /// Charges the saved payment method, sending `request.idempotency_key` so a repeat of
    /// the same request answers the first outcome.
    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome;

    /// Reads a charge back by its reference (reconciliation, webhooks): what the gateway says
    /// now.
    async fn retrieve(&self, charge_ref: &str) -> ChargeOutcome;

    /// Finishes a charge after the shopper's action (3DS, PayPal approval) — Stripe reads the
    /// PaymentIntent back; PayPal captures an approved order with `idempotency_key` — and
    /// answers its outcome. Never trusts what the browser said.
    async fn complete_action(&self, charge_ref: &str, idempotency_key: &str) -> ChargeOutcome;

    /// Refunds `request.amount` of one charge, idempotently.
    async fn refund(&self, request: &RefundRequest) -> RefundOutcome;

    /// The id a store order records as a succeeded charge's transaction (WooCommerce
    /// `transaction_id`): what the store's own plugin for this gateway names the payment by.
    /// The charge reference itself, except where the gateway names the money movement apart
    /// from `charge_ref` (PayPal: the order's capture, not the order).
    async fn transaction_id(&self, charge_ref: &str) -> anyhow::Result<String> {
        Ok(charge_ref.to_owned())
    }

    fn state(&self) -> GatewayState;
}

/// PayPal Orders v2 with vaulted payment sources (OAuth2 client credentials).
pub mod paypal;
/// The sandbox gateway: test payment methods, in process, no account.
pub mod sandbox;
/// Stripe PaymentIntents (form-encoded, `Idempotency-Key`).
pub mod stripe;

use std::collections::BTreeMap;
use std::sync::Arc;

/// `[gateways]`: which adapters run. The sandbox is on unless turned off; Stripe and PayPal
/// when their section is present.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaysConfig {
    pub sandbox: sandbox::SandboxConfig,
    pub stripe: Option<stripe::StripeConfig>,
    pub paypal: Option<paypal::PayPalConfig>,
}

/// The configured adapters, by id.
#[derive(Clone, Default)]
pub struct Gateways {
    by_id: BTreeMap<&'static str, Arc<dyn Gateway>>,
    sandbox: Option<Arc<sandbox::Sandbox>>,
    paypal: Option<Arc<paypal::PayPal>>,
}

impl Gateways {
    pub fn from_config(config: &GatewaysConfig) -> anyhow::Result<Self> {
        let mut gateways = Self::default();
        if config.sandbox.enabled {
            let sandbox = Arc::new(sandbox::Sandbox::new());
            gateways.sandbox = Some(sandbox.clone());
            gateways.add(sandbox);
        }
        if let Some(stripe) = &config.stripe {
            gateways.add(Arc::new(stripe::Stripe::from_config(stripe)?));
        }
        if let Some(paypal) = &config.paypal {
            let paypal = Arc::new(paypal::PayPal::from_config(paypal)?);
            gateways.paypal = Some(paypal.clone());
            gateways.add(paypal);
        }
        Ok(gateways)
    }

    /// Adds (or replaces) an adapter: tests put in the one they hold.
    pub fn add(&mut self, gateway: Arc<dyn Gateway>) {
        self.by_id.insert(gateway.id(), gateway);
    }

    /// The adapter a parent order's `payment.gateway` names.
    pub fn get(&self, id: &str) -> Option<Arc<dyn Gateway>> {
        self.by_id.get(id).cloned()
    }

    /// The sandbox, when it runs: its 3DS page authenticates through it.
    pub fn sandbox(&self) -> Option<Arc<sandbox::Sandbox>> {
        self.sandbox.clone()
    }

    /// PayPal, when configured: its webhooks are verified through its API.
    pub fn paypal(&self) -> Option<Arc<paypal::PayPal>> {
        self.paypal.clone()
    }

    pub fn states(&self) -> Vec<GatewayState> {
        self.by_id.values().map(|g| g.state()).collect()
    }
}
