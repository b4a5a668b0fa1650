//! Deliverability: the feed of what happened to recovery messages
//! (`GET /ocart/v1/recovery/deliverability`), and the signed inbound endpoint for mail
//! providers' delivery webhooks (`POST /ocart/v1/webhooks/deliverability`).
//!
//! The webhook body is provider-neutral JSON — `{"events": [{"id", "type": "delivered" |
//! "bounce" | "complaint" | "open", "message_id", "bounce_type": "hard" | "soft", "detail"}]}`
//! — where `message_id` is the Message-ID OCart gave the email (`<key@domain>`). It is signed
//! as `X-OCart-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` under
//! `[email] webhook_secret`; deliveries older than five minutes are refused, so a captured
//! request cannot be replayed later, and a provider's retry within the window is recognised by
//! its event id and changes nothing.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use hmac::{Hmac, Mac};
use ocart_domain::recovery::{DeliveryKind, DeliveryReport};
use ocart_domain::token::Capability;
use ocart_projections::queries::recovery::{self as q, DeliverabilityRow};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::{AppState, RequestContext};
use crate::usecases::report_delivery::{report_delivery, Reported};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(feed))
        .routes(routes!(inbound))
        .routes(routes!(dns_check))
}

const READ: &[Capability] = &[
    Capability::OcartManageRecovery,
    Capability::OcartManage,
    Capability::OcartViewReports,
];

/// How old a signed delivery may be.
const TOLERANCE_SECS: i64 = 300;

const KINDS: [&str; 7] = [
    "send",
    "delivery",
    "open",
    "click",
    "bounce",
    "complaint",
    "unsubscribe",
];

#[derive(Debug, Deserialize, IntoParams)]
pub struct FeedQuery {
    /// send, delivery, open, click, bounce, complaint or unsubscribe
    #[param(pattern = "^(send|delivery|open|click|bounce|complaint|unsubscribe)$")]
    pub kind: Option<String>,
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeedPage {
    pub events: Vec<DeliverabilityRow>,
    pub next_cursor: Option<i64>,
}

/// What happened to recovery messages, newest first.
#[utoipa::path(get, path = "/ocart/v1/recovery/deliverability", tag = "recovery", params(FeedQuery),
    responses((status = 200, body = FeedPage), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn feed(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<FeedQuery>,
) -> Result<Json<FeedPage>, ApiError> {
    caller.require(READ)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 500"));
    }
    if let Some(kind) = &query.kind {
        if !KINDS.contains(&kind.as_str()) {
            return Err(ApiError::validation(
                "kind",
                format!("must be one of {}", KINDS.join(", ")),
            ));
        }
    }
    let events =
        q::list_deliverability(&state.core.db, query.kind.as_deref(), query.cursor, limit).await?;
    let next_cursor = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.position))
        .flatten();
    Ok(Json(FeedPage {
        events,
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsCheckRequest {
    /// The sending domain (the From address's).
    #[schema(
        max_length = 253,
        pattern = "^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)+\\.?$"
    )]
    pub domain: String,
    /// The DKIM selector (default: `[email.dkim] selector`; required without one).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,63}$")]
    pub dkim_selector: Option<String>,
}

/// SPF, DKIM and DMARC of a sending domain, each with a plain verdict.
#[utoipa::path(post, path = "/ocart/v1/recovery/dns-check", tag = "recovery", request_body = DnsCheckRequest,
    responses((status = 200, body = crate::dnscheck::DnsReport), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn dns_check(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Json<crate::dnscheck::DnsReport>, ApiError> {
    caller.require(READ)?;
    let request: DnsCheckRequest = crate::json::parse(&body)?;
    let mut errors = Vec::new();
    let domain = crate::dnscheck::valid_domain(&request.domain);
    if domain.is_none() {
        errors.push(ocart_domain::FieldError::new(
            "domain",
            "must be a domain name such as shop.example.com",
        ));
    }
    let selector = request
        .dkim_selector
        .or_else(|| {
            state
                .core
                .config
                .email
                .dkim
                .as_ref()
                .map(|d| d.selector.clone())
        })
        .unwrap_or_default();
    let selector_ok = !selector.is_empty()
        && selector.len() <= 63
        && selector
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !selector_ok {
        errors.push(ocart_domain::FieldError::new(
            "dkim_selector",
            "name the DKIM selector (letters, digits, - and _), or configure [email.dkim]",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let server =
        crate::dnscheck::resolver_address(state.core.config.recovery.dns_resolver.as_deref())
            .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let domain = domain.unwrap_or_default();
    let expected = crate::dnscheck::DkimExpectation::from_config(
        state.core.config.email.dkim.as_ref(),
        &domain,
        &selector,
    );
    let report = crate::dnscheck::check(server, &domain, &selector, &expected)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot query DNS at {server}: {e}")))?;
    Ok(Json(report))
}

/// A delivery of the mail provider's reports, signed over the raw body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct Inbound {
    #[schema(max_items = 1000)]
    events: Vec<InboundEvent>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InboundEvent {
    /// The provider's id of the event (kept when 1 to 200 characters).
    #[serde(default)]
    id: Option<String>,
    #[serde(rename = "type")]
    #[schema(
        pattern = "^(delivered|delivery|bounce|bounced|complaint|complained|spam|open|opened)$"
    )]
    kind: String,
    /// The Message-ID of the message OCart sent, with or without `<…>`.
    message_id: String,
    /// hard or permanent, soft or transient (default: hard for a bounce).
    #[serde(default)]
    #[schema(pattern = "^(hard|permanent|soft|transient)$")]
    bounce_type: Option<String>,
    #[serde(default)]
    detail: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundReply {
    pub recorded: usize,
    pub repeated: usize,
    /// Events about messages OCart did not send (ignored).
    pub unknown: usize,
}

/// Whether `header` signs `body` under `secret` within the tolerance of `now`.
fn verify(secret: &str, header: &str, body: &[u8], now: i64) -> Result<(), String> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1.push(value.to_owned()),
            _ => {}
        }
    }
    let t = t.ok_or("X-OCart-Signature has no t=<unix time>")?;
    if (now - t).abs() > TOLERANCE_SECS {
        return Err(format!(
            "the delivery was signed at {t}, more than {TOLERANCE_SECS} seconds from now: refused as a replay"
        ));
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let matches = v1.iter().any(|sig| {
        hex::decode(sig).is_ok_and(|sig| {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
            mac.update(format!("{t}.").as_bytes());
            mac.update(body);
            sig.len() == expected.len() && mac.verify_slice(&sig).is_ok()
        })
    });
    if matches {
        Ok(())
    } else {
        Err("X-OCart-Signature does not match the body under the webhook secret".into())
    }
}

/// A mail provider's delivery reports, signed with `X-OCart-Signature: t=<unix time>,v1=<hex
/// HMAC-SHA256 of "t." + body under [email] webhook_secret>`.
#[utoipa::path(post, path = "/ocart/v1/webhooks/deliverability", tag = "webhooks",
    request_body = Inbound,
    params(("X-OCart-Signature" = String, Header, description = "t=<unix time>,v1=<hex HMAC-SHA256 of \"t.\" + body>")),
    responses(
        (status = 200, body = InboundReply),
        (status = 401, description = "The signature is missing, wrong or more than 5 minutes old"),
        (status = 503, description = "No webhook secret is set up, or the store is unavailable"),
    ))]
pub async fn inbound(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<InboundReply>, ApiError> {
    let Some(secret) = state
        .core
        .config
        .email
        .webhook_secret
        .as_ref()
        .map(secrecy::ExposeSecret::expose_secret)
    else {
        return Err(ApiError::Unavailable(
            "delivery webhooks are not set up here: set [email] webhook_secret".into(),
        ));
    };
    let signature = headers
        .get("x-ocart-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::BadSignature(
                "the delivery is not signed: X-OCart-Signature is missing".into(),
            )
        })?;
    let now = state.core.clock.now().timestamp();
    verify(secret, signature, &body, now).map_err(ApiError::BadSignature)?;
    let inbound: Inbound = crate::json::parse(&body)?;
    if inbound.events.len() > 1000 {
        return Err(ApiError::validation(
            "events",
            "at most 1000 events per delivery",
        ));
    }
    let mut reports = Vec::with_capacity(inbound.events.len());
    for (i, event) in inbound.events.into_iter().enumerate() {
        let kind = match event.kind.as_str() {
            "delivered" | "delivery" => DeliveryKind::Delivered,
            "bounce" | "bounced" => DeliveryKind::Bounced,
            "complaint" | "complained" | "spam" => DeliveryKind::Complained,
            "open" | "opened" => DeliveryKind::Opened,
            other => {
                return Err(ApiError::validation(
                    format!("events[{i}].type"),
                    format!("{other:?} is not delivered, bounce, complaint or open"),
                ))
            }
        };
        let hard = match event.bounce_type.as_deref() {
            None | Some("hard") | Some("permanent") => kind == DeliveryKind::Bounced,
            Some("soft") | Some("transient") => false,
            Some(other) => {
                return Err(ApiError::validation(
                    format!("events[{i}].bounce_type"),
                    format!("{other:?} is not hard or soft"),
                ))
            }
        };
        // `<key@domain>` → key.
        let key = event
            .message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        reports.push((
            key,
            DeliveryReport {
                kind,
                hard,
                provider_id: event.id.filter(|id| !id.is_empty() && id.len() <= 200),
                detail: event.detail,
            },
        ));
    }
    let meta = ctx.meta("webhook:deliverability".into(), &state);
    let mut reply = InboundReply {
        recorded: 0,
        repeated: 0,
        unknown: 0,
    };
    for (key, report) in reports {
        match report_delivery(&state.core, &key, report, &meta).await? {
            Reported::Recorded => reply.recorded += 1,
            Reported::Repeated => reply.repeated += 1,
            Reported::Unknown => reply.unknown += 1,
        }
    }
    Ok(Json(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures_bind_the_body_and_the_time() {
        let body = br#"{"events":[]}"#;
        assert!(verify("s", &sign("s", 1000, body), body, 1000).is_ok());
        assert!(verify("s", &sign("s", 1000, body), body, 1299).is_ok());
        assert!(verify("s", &sign("s", 1000, body), body, 1301)
            .unwrap_err()
            .contains("replay"));
        assert!(verify("other", &sign("s", 1000, body), body, 1000).is_err());
        assert!(verify("s", &sign("s", 1000, body), b"{}", 1000).is_err());
        assert!(verify("s", "v1=abc", body, 1000).is_err());
    }
}
