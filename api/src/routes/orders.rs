//! Order signals in: the store-neutral `POST /ocart/v1/orders` (bearer token) and WooCommerce's
//! order webhooks at `POST /ocart/v1/webhooks/woocommerce` (verified by
//! `X-WC-Webhook-Signature`, the base64 HMAC-SHA256 of the raw body under the webhook's
//! secret). Both record the order, convert the cart it came from once it is paid, and stop
//! the buyer's other runs; both are safe to replay, and both are ordered by the store's
//! modification time (`modified_at`, WooCommerce's `date_modified_gmt`): a stale delivery
//! changes nothing. Their bodies may weigh up to [`MAX_ORDER_BODY`] (a WooCommerce order of a
//! thousand lines), where every other route keeps the small limit. `GET /ocart/v1/orders`
//! lists what arrived.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use ocart_domain::token::Capability;
use ocart_domain::Currency;
use ocart_projections::queries::recovery::{self as q, OrderRow};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::routes::keyset;
use crate::state::{AppState, RequestContext};
use crate::usecases::record_order::{
    record_order, LineInput, OrderInput, PaymentInput, RecordedOrder,
};

/// The most an order signal (API or webhook) may weigh: WooCommerce sends the whole order,
/// every line with its taxes and meta data, about 1.5 KiB a line.
pub const MAX_ORDER_BODY: usize = 4 * 1024 * 1024;

pub fn router() -> OpenApiRouter<AppState> {
    let signals = OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(woocommerce));
    crate::json::documented_with_body_limit(signals, MAX_ORDER_BODY)
        .routes(routes!(list))
        .routes(routes!(show))
}

const READ: &[Capability] = &[
    Capability::OcartManage,
    Capability::OcartManageRecovery,
    Capability::OcartViewReports,
];
const WRITE: &[Capability] = &[Capability::OcartManage, Capability::OcartManageRecovery];

/// A store order, in store-neutral terms.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    /// The store's order id (1–100 characters).
    #[schema(max_length = 100, pattern = "\\S")]
    pub order_id: String,
    /// The store's status: `processing` and `completed` are paid; `on-hold` and `pending` are
    /// paid when `payment_method` is one of `recovery.offline_gateways`; any other is not.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,40}$")]
    pub status: String,
    /// The payment gateway id (`stripe`, `bacs`, `cod`, …).
    #[schema(max_length = 64)]
    pub payment_method: Option<String>,
    /// ISO 4217 code.
    #[schema(
        pattern = "^(AED|AFN|ALL|AMD|ANG|AOA|ARS|AUD|AWG|AZN|BAM|BBD|BDT|BGN|BHD|BIF|BMD|BND|BOB|BRL|BSD|BTN|BWP|BYN|BZD|CAD|CDF|CHF|CLP|CNY|COP|CRC|CUP|CVE|CZK|DJF|DKK|DOP|DZD|EGP|ERN|ETB|EUR|FJD|FKP|GBP|GEL|GHS|GIP|GMD|GNF|GTQ|GYD|HKD|HNL|HTG|HUF|IDR|ILS|INR|IQD|IRR|ISK|JMD|JOD|JPY|KES|KGS|KHR|KMF|KPW|KRW|KWD|KYD|KZT|LAK|LBP|LKR|LRD|LSL|LYD|MAD|MDL|MGA|MKD|MMK|MNT|MOP|MRU|MUR|MVR|MWK|MXN|MYR|MZN|NAD|NGN|NIO|NOK|NPR|NZD|OMR|PAB|PEN|PGK|PHP|PKR|PLN|PYG|QAR|RON|RSD|RUB|RWF|SAR|SBD|SCR|SDG|SEK|SGD|SHP|SLE|SOS|SRD|SSP|STN|SVC|SYP|SZL|THB|TJS|TMT|TND|TOP|TRY|TTD|TWD|TZS|UAH|UGX|USD|UYU|UZS|VES|VND|VUV|WST|XAF|XCD|XCG|XOF|XPF|YER|ZAR|ZMW|ZWG)$"
    )]
    pub currency: String,
    /// The order total in minor units (cents).
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub total: i64,
    /// The buyer's email: only its keyed hash is kept, to match carts and to stop runs.
    #[schema(value_type = Option<crate::openapi::EmailAddressOrBlank>)]
    pub email: Option<String>,
    /// When the order was placed (RFC 3339; default now).
    pub placed_at: Option<DateTime<Utc>>,
    /// When the store last modified the order (RFC 3339), if it knows. Signals are ordered by
    /// it: one older than the order OCart has recorded is ignored (`stale: true`), so a late
    /// retry cannot turn a paid order back to unpaid. At an equal time a signal may add payment
    /// but not take it away; without it, the last signal to arrive wins.
    pub modified_at: Option<DateTime<Utc>>,
    /// The OCart cart id, if the store kept it (`ocart_cart` of a restore).
    #[schema(max_length = 64)]
    pub cart_id: Option<String>,
    /// The checkout session token the cart was captured with.
    #[schema(max_length = 200)]
    pub session_token: Option<String>,
    /// The `ocart_restore` token the shopper came back with.
    #[schema(max_length = 100)]
    pub restore_token: Option<String>,
    /// Coupon codes applied to the order: at most 20, each at most 64 characters.
    #[serde(default)]
    #[schema(max_items = 20)]
    pub coupon_codes: Vec<String>,
    /// The saved payment the order was paid with (what a one-click upsell charges).
    pub payment: Option<PaymentBody>,
    /// The order's lines: at most 1000. Those with an `offer_id` (an accepted bump's line
    /// meta `_ocart_offer_id`) count the offer's revenue once the order is paid.
    #[serde(default)]
    #[schema(max_items = 1000)]
    pub lines: Vec<LineBody>,
}

/// A saved payment: gateway-side ids only, no card data.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentBody {
    #[schema(pattern = "^(stripe|paypal|sandbox)$")]
    pub gateway: String,
    /// The gateway's customer (Stripe `cus_…`, a PayPal customer id): 1 to 255 printable ASCII
    /// characters.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")]
    pub customer: Option<String>,
    /// The saved payment method (Stripe `pm_…`, a PayPal vault id, a sandbox method): 1 to 255
    /// printable ASCII characters.
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]{1,255}$")]
    pub payment_method: String,
}

/// An order line.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    /// A non-negative integer, or a string of 1 to 100 characters.
    #[serde(deserialize_with = "crate::json::with_whole_numbers")]
    #[schema(value_type = crate::routes::capture::ProductIdBody)]
    pub product_id: ocart_domain::ProductId,
    /// 1 to 10000.
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: u32,
    /// The line's total in minor units.
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub total: i64,
    /// The OCart offer the line came from (1 to 100 printable ASCII characters).
    #[schema(min_length = 1, max_length = 100, pattern = "^[!-~]{1,100}$")]
    pub offer_id: Option<String>,
}

impl From<OrderRequest> for OrderInput {
    fn from(r: OrderRequest) -> Self {
        OrderInput {
            order_id: r.order_id,
            status: r.status,
            payment_method: r.payment_method,
            currency: r.currency,
            total: r.total,
            email: r.email,
            placed_at: r.placed_at,
            modified_at: r.modified_at,
            cart_id: r.cart_id,
            session_token: r.session_token,
            restore_token: r.restore_token,
            coupon_codes: r.coupon_codes,
            payment: r.payment.map(|p| PaymentInput {
                gateway: p.gateway,
                customer: p.customer,
                payment_method: p.payment_method,
            }),
            lines: r
                .lines
                .into_iter()
                .map(|l| LineInput {
                    product_id: l.product_id,
                    quantity: l.quantity,
                    total: l.total,
                    offer_id: l.offer_id,
                })
                .collect(),
        }
    }
}

/// Records an order signal from the store.
#[utoipa::path(post, path = "/ocart/v1/orders", tag = "orders", request_body = OrderRequest,
    responses((status = 200, body = RecordedOrder), (status = 400, body = crate::error::Problem), (status = 409, description = "The order is recorded in another currency, or concurrent requests changed it (retry)"), (status = 413, body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 503, description = "The store is unavailable; see Retry-After")),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<Json<RecordedOrder>, ApiError> {
    caller.require(WRITE)?;
    let request: OrderRequest = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let recorded = record_order(&state.core, request.into(), "api", &meta).await?;
    Ok(Json(recorded))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct OrderQuery {
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,16}\\.([0-9a-f]{2})*$")]
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OrderPage {
    pub orders: Vec<OrderRow>,
    pub next_cursor: Option<String>,
}

/// Orders OCart has heard of, newest first, with the cart each converted.
#[utoipa::path(get, path = "/ocart/v1/orders", tag = "orders", params(OrderQuery),
    responses((status = 200, body = OrderPage), (status = 400, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<OrderQuery>,
) -> Result<Json<OrderPage>, ApiError> {
    caller.require(READ)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 200"));
    }
    let before = match query.cursor.as_deref() {
        Some(raw) => Some(
            keyset::decode(raw).ok_or_else(|| ApiError::validation("cursor", "is not a cursor"))?,
        ),
        None => None,
    };
    let orders = q::list_orders(&state.core.db, before, limit).await?;
    let next_cursor = (orders.len() as i64 == limit)
        .then(|| {
            orders
                .last()
                .map(|o| keyset::encode(o.placed_at, &o.order_id))
        })
        .flatten();
    Ok(Json(OrderPage {
        orders,
        next_cursor,
    }))
}

/// One order, with the saved payment and the offer lines it was recorded with.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderView {
    #[serde(flatten)]
    pub order: OrderRow,
    /// The saved payment (`{gateway, customer, payment_method}`), when the store sent it.
    #[schema(value_type = Option<Object>)]
    pub payment: Option<ocart_domain::order::PaymentRef>,
    /// The lines that came from an offer (`{offer_id, product_id, quantity, total}`).
    #[schema(value_type = Vec<Object>)]
    pub offer_lines: Vec<ocart_domain::order::OfferLine>,
}

#[utoipa::path(get, path = "/ocart/v1/orders/{id}", tag = "orders", params(("id" = String, Path, description = "The store's order id")),
    responses((status = 200, body = OrderView), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    caller.require(READ)?;
    let order = q::get_order(&state.core.db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("order {id}")))?;
    // The saved payment is in the order's events, not its row.
    let aggregate_id = ocart_domain::order::order_id_for(&id).to_string();
    let (aggregate, _, _) = state
        .core
        .orders
        .load(&aggregate_id)
        .await
        .map_err(|e| crate::error::command_error(e, |e| ApiError::Internal(e.into())))?;
    let facts = aggregate.facts();
    Ok(Json(OrderView {
        order,
        payment: facts.and_then(|f| f.payment.clone()),
        offer_lines: facts.map(|f| f.offer_lines.clone()).unwrap_or_default(),
    }))
}

/// The parts of a WooCommerce order (REST API v3 shape, as order webhooks deliver it) that
/// OCart reads.
#[derive(Debug, Deserialize)]
struct WcOrder {
    #[serde(deserialize_with = "crate::json::whole")]
    id: u64,
    status: String,
    currency: String,
    total: String,
    #[serde(default)]
    date_created_gmt: Option<String>,
    #[serde(default)]
    date_modified_gmt: Option<String>,
    #[serde(default)]
    payment_method: Option<String>,
    #[serde(default)]
    billing: Option<WcBilling>,
    #[serde(default)]
    coupon_lines: Vec<WcCoupon>,
    #[serde(default)]
    meta_data: Vec<WcMeta>,
    #[serde(default)]
    line_items: Vec<WcLine>,
}

/// A line of a WooCommerce order: its product, quantity, total (a decimal string) and meta
/// (`_ocart_offer_id` on a bump's line).
#[derive(Debug, Deserialize)]
struct WcLine {
    #[serde(default, deserialize_with = "crate::json::whole")]
    product_id: u64,
    #[serde(default, deserialize_with = "crate::json::whole")]
    quantity: u32,
    #[serde(default)]
    total: Option<String>,
    #[serde(default)]
    meta_data: Vec<WcMeta>,
}

#[derive(Debug, Deserialize)]
struct WcBilling {
    #[serde(default)]
    email: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WcCoupon {
    code: String,
}

#[derive(Debug, Deserialize)]
struct WcMeta {
    key: String,
    #[serde(default)]
    value: serde_json::Value,
}

impl WcOrder {
    fn meta(&self, key: &str) -> Option<String> {
        self.meta_data
            .iter()
            .find(|m| m.key == key)
            .and_then(|m| m.value.as_str().map(str::to_owned))
    }

    /// The saved payment the gateway wrote on the order, under the configured meta keys.
    fn payment(&self, keys: &ocart_processors::store::WooPaymentMeta) -> Option<PaymentBody> {
        let method = self.payment_method.as_deref()?;
        let (gateway, customer, payment_method) =
            if keys.stripe_gateways.iter().any(|g| g == method) {
                ("stripe", &keys.stripe_customer, &keys.stripe_payment_method)
            } else if keys.paypal_gateways.iter().any(|g| g == method) {
                ("paypal", &keys.paypal_customer, &keys.paypal_payment_method)
            } else {
                return None;
            };
        let payment_method = self.meta(payment_method).filter(|m| !m.is_empty())?;
        Some(PaymentBody {
            gateway: gateway.into(),
            customer: self.meta(customer).filter(|c| !c.is_empty()),
            payment_method,
        })
    }

    fn into_request(
        self,
        keys: &ocart_processors::store::WooPaymentMeta,
    ) -> Result<OrderRequest, ApiError> {
        let currency = Currency::parse("currency", &self.currency)
            .map_err(|e| ApiError::Validation(vec![e]))?;
        let payment = self.payment(keys);
        let mut lines = Vec::with_capacity(self.line_items.len());
        // Only the lines of an offer matter here; the others are the store's business.
        for (i, line) in self.line_items.iter().enumerate() {
            let Some(offer_id) = line
                .meta_data
                .iter()
                .find(|m| m.key == "_ocart_offer_id")
                .and_then(|m| match &m.value {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
            else {
                continue;
            };
            let total = match line.total.as_deref() {
                Some(raw) => currency
                    .parse_decimal(&format!("line_items[{i}].total"), raw)
                    .map_err(|e| ApiError::Validation(vec![e]))?,
                None => 0,
            };
            lines.push(LineBody {
                product_id: ocart_domain::ProductId::Number(line.product_id),
                quantity: line.quantity,
                total,
                offer_id: Some(offer_id),
            });
        }
        let total = currency
            .parse_decimal("total", &self.total)
            .map_err(|e| ApiError::Validation(vec![e]))?;
        let placed_at = wc_date("date_created_gmt", self.date_created_gmt.as_deref())?;
        let modified_at = wc_date("date_modified_gmt", self.date_modified_gmt.as_deref())?;
        Ok(OrderRequest {
            order_id: self.id.to_string(),
            cart_id: self.meta("_ocart_cart_id"),
            session_token: self.meta("_ocart_session"),
            restore_token: self.meta("_ocart_restore"),
            status: self.status,
            payment_method: self.payment_method.filter(|m| !m.is_empty()),
            currency: self.currency,
            total,
            email: self.billing.and_then(|b| b.email),
            placed_at,
            modified_at,
            coupon_codes: self.coupon_lines.into_iter().map(|c| c.code).collect(),
            payment,
            lines,
        })
    }
}

/// A WooCommerce GMT date (`YYYY-MM-DDTHH:MM:SS`, no zone); `null` or absent is none.
fn wc_date(field: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match raw {
        Some(raw) => NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S")
            .map(|d| Some(d.and_utc()))
            .map_err(|_| {
                ApiError::validation(
                    field,
                    format!("{raw:?} is not a WooCommerce date (YYYY-MM-DDTHH:MM:SS)"),
                )
            }),
        None => Ok(None),
    }
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum WebhookReply {
    Recorded(RecordedOrder),
    Note { ignored: String },
}

/// Whether `signature` (base64) is the HMAC-SHA256 of `body` under `secret`.
fn signed(secret: &str, body: &[u8], signature: &str) -> bool {
    let Ok(expected) = STANDARD.decode(signature.trim()) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// WooCommerce order webhooks (topics `order.created`, `order.updated`, `order.restored`).
/// Creating a webhook in WooCommerce first sends a ping, `webhook_id=N`, which is answered 200
/// so the store activates it. Other topics are acknowledged and ignored.
#[utoipa::path(post, path = "/ocart/v1/webhooks/woocommerce", tag = "webhooks",
    request_body(content = Object, description = "The WooCommerce order (REST API v3 shape; `id`, `status`, `currency` and `total` are read, with `date_modified_gmt`, `billing`, `coupon_lines` and `meta_data`), or the ping `webhook_id=N`"),
    params(
        ("X-WC-Webhook-Signature" = Option<String>, Header, description = "Base64 HMAC-SHA256 of the raw body under [woocommerce] webhook_secret (every delivery but the ping)"),
        ("X-WC-Webhook-Topic" = Option<String>, Header, description = "order.created, order.updated or order.restored are recorded; any other topic is acknowledged and ignored"),
    ),
    responses(
        (status = 200, description = "Recorded, or acknowledged and ignored (ping, other topics)", body = Object),
        (status = 401, description = "The signature is missing or does not match"),
        (status = 409, description = "The order is recorded in another currency, or concurrent requests changed it (retry)"),
        (status = 503, description = "No webhook secret is set up, or the store is unavailable; see Retry-After"),
    ))]
pub async fn woocommerce(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<WebhookReply>, ApiError> {
    let is_ping = body.starts_with(b"webhook_id=")
        && body[11..].iter().all(u8::is_ascii_digit)
        && body.len() > 11;
    if is_ping {
        return Ok(Json(WebhookReply::Note {
            ignored: "ping".into(),
        }));
    }
    let signature = headers
        .get("x-wc-webhook-signature")
        .and_then(|v| v.to_str().ok());
    // Any secret in force: the config file's and those `ocart gateway rotate` stored (ADR 0016).
    let verified = state
        .core
        .secret_ring
        .check_webhook(
            &state.core,
            ocart_domain::gateway_secret::SecretPurpose::WoocommerceWebhook,
            |secrets| {
                let Some(signature) = signature else {
                    return Err(ApiError::BadSignature(
                        "the delivery is not signed: X-WC-Webhook-Signature is missing".into(),
                    ));
                };
                if secrets.iter().any(|s| signed(s, &body, signature)) {
                    Ok(())
                } else {
                    Err(ApiError::BadSignature(
                        "X-WC-Webhook-Signature does not match the body under the webhook secret"
                            .into(),
                    ))
                }
            },
        )
        .await;
    match verified {
        None => {
            return Err(ApiError::Unavailable(
                "WooCommerce webhooks are not set up here: set [woocommerce] webhook_secret".into(),
            ))
        }
        Some(result) => result?,
    }
    let topic = headers
        .get("x-wc-webhook-topic")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !matches!(topic, "order.created" | "order.updated" | "order.restored") {
        return Ok(Json(WebhookReply::Note {
            ignored: format!("topic {topic:?}"),
        }));
    }
    let order: WcOrder = crate::json::parse(&body)?;
    let meta = ctx.meta("webhook:woocommerce".into(), &state);
    let request = order.into_request(&state.core.config.woocommerce.payment_meta)?;
    let recorded = record_order(&state.core, request.into(), "woocommerce", &meta).await?;
    Ok(Json(WebhookReply::Recorded(recorded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_the_base64_hmac_sha256_of_the_raw_body() {
        let body = br#"{"id":1}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(body);
        let good = STANDARD.encode(mac.finalize().into_bytes());
        assert!(signed("s3cret", body, &good));
        assert!(!signed("other", body, &good));
        assert!(!signed("s3cret", br#"{"id":2}"#, &good));
        assert!(!signed("s3cret", body, "not base64!"));
    }
}
