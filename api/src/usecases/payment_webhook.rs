//! A payment gateway's webhook about an upsell charge (`POST /ocart/v1/webhooks/stripe`): the
//! signature is verified over the raw body before anything is parsed, then the event's
//! PaymentIntent is tied to its acceptance by the `ocart_acceptance_id` (or `invoice_id`) metadata
//! OCart sent with the charge, and its outcome recorded on the acceptance.
//!
//! Safe to repeat: the acceptance records one outcome per state change and nothing once the
//! charge is decided, so a redelivered event (the same event id) or an event racing the
//! charger's own answer records nothing new. Events about payments OCart did not make are
//! acknowledged and ignored, so the gateway stops retrying them.

use ocart_domain::upsell::{AcceptanceStatus, ChargeResult, UpsellCommand, UpsellError};
use ocart_processors::gateways::{Gateway as _, ACCEPTANCE_METADATA};
use ocart_projections::{CommandError, CommandMeta};
use serde::{Deserialize, Serialize};

use super::StoreFailure;
use crate::core::Core;
use crate::gateways::stripe_signature;

/// What a webhook delivery did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WebhookOutcome {
    /// The gateway's event id.
    pub event_id: String,
    /// `recorded` (the acceptance moved), `unchanged` (already known: a repeat, or a late
    /// event after the charge was decided) or `ignored` (not an upsell charge, or a type OCart
    /// does not act on).
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acceptance_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentWebhookError {
    /// No signing secret is configured: the delivery cannot be verified (503, so the gateway
    /// retries once it is set up).
    #[error("Stripe webhooks are not set up here: set [gateways.stripe] webhook_secrets")]
    NotConfigured,
    #[error("{0} webhooks are not set up here: set {1}")]
    NotConfiguredFor(&'static str, &'static str),
    /// The gateway could not be asked whether the delivery is genuine (503, the gateway
    /// retries).
    #[error("the delivery could not be verified now: {0}")]
    Unverifiable(String),
    #[error("{0}")]
    BadSignature(String),
    #[error("the event cannot be read: {0}")]
    Malformed(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(PaymentWebhookError);

#[derive(Deserialize)]
struct StripeEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: StripeEventData,
}

#[derive(Deserialize)]
struct StripeEventData {
    object: serde_json::Value,
}

/// Records a Stripe event (`payment_intent.succeeded`, `payment_intent.payment_failed`) on
/// the acceptance whose charge it is.
pub async fn stripe(
    core: &Core,
    signature: Option<&str>,
    body: &[u8],
    meta: &CommandMeta,
) -> Result<WebhookOutcome, PaymentWebhookError> {
    // The config file's secrets and those `ocart gateway rotate` stored, while in force
    // (ADR 0016).
    core.secret_ring
        .check_webhook(
            core,
            ocart_domain::gateway_secret::SecretPurpose::StripeWebhook,
            |secrets| {
                let signature = signature.ok_or_else(|| {
                    PaymentWebhookError::BadSignature(
                        "the delivery is not signed: Stripe-Signature is missing".into(),
                    )
                })?;
                stripe_signature::verify(signature, body, secrets, core.clock.now().timestamp())
                    .map_err(|e| {
                        PaymentWebhookError::BadSignature(format!("Stripe-Signature: {e}"))
                    })
            },
        )
        .await
        .ok_or(PaymentWebhookError::NotConfigured)??;
    let event: StripeEvent =
        serde_json::from_slice(body).map_err(|e| PaymentWebhookError::Malformed(e.to_string()))?;
    let ignored = |event_id: String| WebhookOutcome {
        event_id,
        result: "ignored",
        acceptance_id: None,
    };
    let intent = &event.data.object;
    let Some(charge_ref) = intent.get("id").and_then(|v| v.as_str()) else {
        return Ok(ignored(event.id));
    };
    let result = match event.kind.as_str() {
        "payment_intent.succeeded" => ChargeResult::Succeeded {
            charge_ref: charge_ref.to_owned(),
        },
        "payment_intent.payment_failed" => {
            let error = intent.get("last_payment_error");
            let text = |key: &str| {
                error
                    .and_then(|e| e.get(key))
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            ChargeResult::Declined {
                charge_ref: Some(charge_ref.to_owned()),
                code: text("decline_code")
                    .or_else(|| text("code"))
                    .unwrap_or_else(|| "payment_failed".into()),
                message: text("message").unwrap_or_else(|| "The payment failed.".into()),
            }
        }
        _ => return Ok(ignored(event.id)),
    };
    let metadata = intent.get("metadata");
    let acceptance_id = [ACCEPTANCE_METADATA, "invoice_id"].iter().find_map(|key| {
        metadata
            .and_then(|m| m.get(*key))
            .and_then(|v| v.as_str())
            .filter(|id| id.starts_with("acc_") && id.len() <= 64)
            .map(str::to_owned)
    });
    let Some(acceptance_id) = acceptance_id else {
        return Ok(ignored(event.id));
    };
    record(core, event.id, acceptance_id, charge_ref, result, meta).await
}

/// Records a PayPal event (`PAYMENT.CAPTURE.COMPLETED`, `PAYMENT.CAPTURE.DENIED`) on the
/// acceptance whose charge it is, once PayPal has verified the delivery
/// (`verify-webhook-signature` with the configured webhook id).
pub async fn paypal(
    core: &Core,
    headers: &[(String, String)],
    body: &[u8],
    meta: &CommandMeta,
) -> Result<WebhookOutcome, PaymentWebhookError> {
    let Some(gateway) = core.gateways.paypal() else {
        return Err(PaymentWebhookError::NotConfiguredFor(
            "PayPal",
            "[gateways.paypal] webhook_id",
        ));
    };
    if !gateway.state().webhooks {
        return Err(PaymentWebhookError::NotConfiguredFor(
            "PayPal",
            "[gateways.paypal] webhook_id",
        ));
    }
    // PayPal cannot be asked about a body that is not JSON: refuse it before the call.
    let event: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PaymentWebhookError::Malformed(e.to_string()))?;
    let verified = gateway
        .verify_webhook(headers, body)
        .await
        .map_err(|e| PaymentWebhookError::Unverifiable(e.to_string()))?;
    if !verified {
        return Err(PaymentWebhookError::BadSignature(
            "PayPal did not verify the delivery (PAYPAL-TRANSMISSION-SIG)".into(),
        ));
    }
    let text = |v: &serde_json::Value, path: &[&str]| {
        path.iter()
            .try_fold(v, |v, key| v.get(*key))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let event_id = text(&event, &["id"]).unwrap_or_default();
    let resource = event.get("resource").cloned().unwrap_or_default();
    let ignored = WebhookOutcome {
        event_id: event_id.clone(),
        result: "ignored",
        acceptance_id: None,
    };
    // The charge reference OCart keeps for a PayPal charge is the order id: a capture event
    // names it in its related ids, an order event is the order.
    let kind = text(&event, &["event_type"]).unwrap_or_default();
    let (order_id, named_by) = match kind.as_str() {
        "PAYMENT.CAPTURE.COMPLETED" | "PAYMENT.CAPTURE.DENIED" | "PAYMENT.CAPTURE.DECLINED" => (
            text(
                &resource,
                &["supplementary_data", "related_ids", "order_id"],
            ),
            resource.clone(),
        ),
        "CHECKOUT.ORDER.COMPLETED" => (
            text(&resource, &["id"]),
            resource
                .get("purchase_units")
                .and_then(|units| units.get(0))
                .cloned()
                .unwrap_or_default(),
        ),
        _ => return Ok(ignored),
    };
    let Some(order_id) = order_id else {
        return Ok(ignored);
    };
    let result = if kind.ends_with("COMPLETED") {
        ChargeResult::Succeeded {
            charge_ref: order_id.clone(),
        }
    } else {
        ChargeResult::Declined {
            charge_ref: Some(order_id.clone()),
            code: "CAPTURE_DENIED".into(),
            message: "PayPal denied the capture.".into(),
        }
    };
    let acceptance_id = ["custom_id", "invoice_id"].iter().find_map(|key| {
        text(&named_by, &[key]).filter(|id| id.starts_with("acc_") && id.len() <= 64)
    });
    let Some(acceptance_id) = acceptance_id else {
        return Ok(ignored);
    };
    record(core, event_id, acceptance_id, &order_id, result, meta).await
}

async fn record(
    core: &Core,
    event_id: String,
    acceptance_id: String,
    charge_ref: &str,
    result: ChargeResult,
    meta: &CommandMeta,
) -> Result<WebhookOutcome, PaymentWebhookError> {
    let (acceptance, _, _) = core
        .acceptances
        .load(&acceptance_id)
        .await
        .map_err(store_or_internal)?;
    let outcome = |result| WebhookOutcome {
        event_id: event_id.clone(),
        result,
        acceptance_id: Some(acceptance_id.clone()),
    };
    // A PaymentIntent that is not this acceptance's charge (the metadata was copied) changes
    // nothing; nor does an event for an acceptance that does not exist.
    match (acceptance.status(), acceptance.charge_ref()) {
        (None, _) | (Some(AcceptanceStatus::DeclinedByShopper), _) => {
            return Ok(outcome("ignored"))
        }
        (_, Some(known)) if known != charge_ref => return Ok(outcome("ignored")),
        _ => {}
    }
    let command = UpsellCommand::RecordCharge {
        result,
        at: meta.at,
    };
    match core
        .acceptances
        .execute(&acceptance_id, command, meta)
        .await
    {
        Ok(done) if done.last_position().is_some() => Ok(outcome("recorded")),
        Ok(_) => Ok(outcome("unchanged")),
        Err(CommandError::Rejected(UpsellError::AlreadyDecided(_) | UpsellError::NotFound)) => {
            Ok(outcome("ignored"))
        }
        Err(err) => Err(store_or_internal(err)),
    }
}

fn store_or_internal(err: CommandError<UpsellError>) -> PaymentWebhookError {
    match StoreFailure::split(err) {
        Ok(failure) => failure.into(),
        Err(rejected) => PaymentWebhookError::Internal(rejected.into()),
    }
}
