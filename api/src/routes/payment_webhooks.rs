//! Payment gateways' webhooks about upsell charges: `POST /ocart/v1/webhooks/stripe`
//! (`Stripe-Signature` over the raw body, several `v1` while a secret rolls, 300 s tolerance).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::{AppState, RequestContext};
use crate::usecases::payment_webhook::{self, WebhookOutcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stripe))
        .routes(routes!(paypal))
}

/// Stripe events about upsell charges: `payment_intent.succeeded` and
/// `payment_intent.payment_failed` are recorded on the acceptance named by the PaymentIntent's
/// `ocart_acceptance_id` metadata; other events and other payments are acknowledged and ignored. A
/// redelivery records nothing new.
#[utoipa::path(post, path = "/ocart/v1/webhooks/stripe", tag = "webhooks",
    request_body(content = Object, description = "A Stripe event (`id`, `type`, `data.object`: the PaymentIntent)"),
    params(
        ("Stripe-Signature" = Option<String>, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"t.body\">` (several v1 while a secret rolls), within 300 s"),
    ),
    responses(
        (status = 200, description = "Recorded, unchanged (a repeat) or ignored", body = WebhookOutcome),
        (status = 400, description = "The event cannot be read", body = crate::error::Problem),
        (status = 401, description = "The signature is missing, outside the tolerance or does not match", body = crate::error::Problem),
        (status = 409, description = "Concurrent requests changed the acceptance (retry)", body = crate::error::Problem),
        (status = 503, description = "No webhook signing secret is set up, or the store is unavailable; see Retry-After", body = crate::error::Problem),
    ))]
pub async fn stripe(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<WebhookOutcome>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let meta = ctx.meta("webhook:stripe".into(), &state);
    Ok(Json(
        payment_webhook::stripe(&state.core, signature, &body, &meta).await?,
    ))
}

/// PayPal events about upsell charges: `PAYMENT.CAPTURE.COMPLETED` and
/// `PAYMENT.CAPTURE.DENIED` are recorded on the acceptance named by the capture's `custom_id`
/// (or `invoice_id`), once PayPal's `verify-webhook-signature` confirms the delivery; other
/// events are acknowledged and ignored.
#[utoipa::path(post, path = "/ocart/v1/webhooks/paypal", tag = "webhooks",
    request_body(content = Object, description = "A PayPal webhook event (`id`, `event_type`, `resource`: the capture)"),
    params(
        ("PAYPAL-TRANSMISSION-ID" = Option<String>, Header, description = "Sent by PayPal; verified with the other PAYPAL-* headers through verify-webhook-signature"),
        ("PAYPAL-TRANSMISSION-SIG" = Option<String>, Header, description = "The transmission's signature"),
    ),
    responses(
        (status = 200, description = "Recorded, unchanged (a repeat) or ignored", body = WebhookOutcome),
        (status = 400, description = "The event cannot be read", body = crate::error::Problem),
        (status = 401, description = "PayPal did not verify the delivery", body = crate::error::Problem),
        (status = 409, description = "Concurrent requests changed the acceptance (retry)", body = crate::error::Problem),
        (status = 503, description = "PayPal webhooks are not set up, or PayPal could not be asked; see Retry-After", body = crate::error::Problem),
    ))]
pub async fn paypal(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<WebhookOutcome>, ApiError> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| name.as_str().starts_with("paypal-"))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let meta = ctx.meta("webhook:paypal".into(), &state);
    Ok(Json(
        payment_webhook::paypal(&state.core, &headers, &body, &meta).await?,
    ))
}
