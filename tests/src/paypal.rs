//! A fake PayPal REST API (OAuth2, Orders v2 with vaulted sources, refunds, webhook
//! verification), stateful, keeping PayPal's rules: bearer tokens from client credentials,
//! `PayPal-Request-Id` idempotency (a replay answers the order it created, in its latest
//! status), PayPal's error shapes, refunds bounded by the capture.
//!
//! | vault id             | create order answers                                           |
//! |----------------------|----------------------------------------------------------------|
//! | `vault_ok` (any other) | `COMPLETED`, captured                                        |
//! | `vault_declined`     | 422 `INSTRUMENT_DECLINED`                                       |
//! | `vault_payer_action` | `PAYER_ACTION_REQUIRED` with a `payer-action` link; after       |
//! |                      | [`FakePayPal::approve`], `APPROVED`, and a capture completes it |

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ocart_api::Config;
use ocart_processors::gateways::paypal::{PayPal, PayPalConfig};
use serde_json::{json, Value};

/// The client credentials the fake accepts.
pub const PAYPAL_CLIENT_ID: &str = "fake-paypal-client";
pub const PAYPAL_CLIENT_SECRET: &str = "fake-paypal-secret";
/// The webhook id the fake's signatures are made for.
pub const PAYPAL_WEBHOOK_ID: &str = "WH-FAKE-0001";
/// Vault ids with a fixed behaviour (any other vault id is `vault_ok`).
pub const VAULT_OK: &str = "vault_ok";
pub const VAULT_DECLINED: &str = "vault_declined";
pub const VAULT_PAYER_ACTION: &str = "vault_payer_action";

/// One order as the fake keeps it.
#[derive(Debug, Clone)]
pub struct FakeOrder {
    pub id: String,
    /// `PAYER_ACTION_REQUIRED`, `APPROVED` or `COMPLETED`.
    pub status: String,
    pub currency: String,
    /// The amount as sent (`"12.34"`) and in minor units.
    pub value: String,
    pub minor: i64,
    pub purchase_unit: Value,
    pub payment_source: Value,
    pub capture: Option<FakeCapture>,
}

/// The capture of an order.
#[derive(Debug, Clone)]
pub struct FakeCapture {
    pub id: String,
    /// Refunds made: (refund id, minor units, value as sent).
    pub refunds: Vec<(String, i64, String)>,
}

#[derive(Default)]
struct Store {
    orders: HashMap<String, FakeOrder>,
    /// `PayPal-Request-Id` of a create → the order it created.
    create_keys: HashMap<String, String>,
    /// `PayPal-Request-Id` of a capture → the order it captured.
    capture_keys: HashMap<String, String>,
    /// `PayPal-Request-Id` of a refund → (capture id, refund id).
    refund_keys: HashMap<String, (String, String)>,
    /// capture id → order id.
    captures: HashMap<String, String>,
}

/// Everything the fake holds, shared with its handlers.
#[derive(Default)]
pub struct PayPalState {
    store: Mutex<Store>,
    tokens: Mutex<HashSet<String>>,
    token_requests: AtomicUsize,
    next_id: AtomicU64,
    fail_5xx: AtomicU32,
    drop_after_charge: AtomicU32,
    delay_ms: AtomicU64,
    /// Create request ids being processed.
    in_flight: Mutex<HashSet<String>>,
    /// Every request line seen (`POST /v2/checkout/orders`).
    pub requests: Mutex<Vec<String>>,
}

/// A create request id being processed, until its handler ends (or is dropped).
struct InFlight {
    state: Arc<PayPalState>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut flying) = self.state.in_flight.lock() {
            flying.remove(&self.key);
        }
    }
}

/// A fake PayPal on `127.0.0.1:port`.
pub struct FakePayPal {
    pub port: u16,
    pub state: Arc<PayPalState>,
    task: tokio::task::JoinHandle<()>,
}

type Reply = axum::response::Response;

fn reply(status: u16, body: Value) -> Reply {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        axum::Json(body),
    )
        .into_response()
}

fn paypal_error(status: u16, name: &str, issue: &str, description: &str) -> Reply {
    reply(
        status,
        json!({
            "name": name,
            "message": "The requested action could not be performed, semantically incorrect, or failed business validation.",
            "debug_id": format!("{:x}", rand_id()),
            "details": [{"issue": issue, "description": description}],
            "links": [{"href": format!("https://developer.paypal.com/api/rest/reference/orders/v2/errors/#{}", issue.to_lowercase()), "rel": "information_link", "method": "GET"}],
        }),
    )
}

fn rand_id() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

impl PayPalState {
    fn id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::SeqCst);
        format!("{prefix}{:015X}", n * 7919 + 1_000_003)
    }
}

/// PayPal's order representation.
fn order_json(order: &FakeOrder, base: &str) -> Value {
    let mut unit = order.purchase_unit.clone();
    unit["reference_id"] = json!("default");
    if let Some(capture) = &order.capture {
        let refunded: i64 = capture.refunds.iter().map(|r| r.1).sum();
        let status = if refunded == 0 {
            "COMPLETED"
        } else if refunded < order.minor {
            "PARTIALLY_REFUNDED"
        } else {
            "REFUNDED"
        };
        unit["payments"] = json!({"captures": [{
            "id": capture.id,
            "status": status,
            "amount": {"currency_code": order.currency, "value": order.value},
            "final_capture": true,
            "links": [{"href": format!("{base}/v2/payments/captures/{}/refund", capture.id), "rel": "refund", "method": "POST"}],
        }]});
    }
    let mut links = vec![
        json!({"href": format!("{base}/v2/checkout/orders/{}", order.id), "rel": "self", "method": "GET"}),
    ];
    if order.status == "PAYER_ACTION_REQUIRED" {
        links.push(json!({"href": format!("https://www.sandbox.paypal.com/checkoutnow?token={}", order.id), "rel": "payer-action", "method": "GET"}));
    }
    json!({
        "id": order.id,
        "intent": "CAPTURE",
        "status": order.status,
        "payment_source": order.payment_source,
        "purchase_units": [unit],
        "links": links,
    })
}

/// The answer PayPal gives without `Prefer: return=representation`: id, status, links.
fn minimal(order: Value) -> Value {
    json!({"id": order["id"], "status": order["status"], "links": order["links"]})
}

fn exponent(currency: &str) -> u32 {
    ocart_domain::Currency::parse("currency", currency)
        .map(|c| c.exponent())
        .unwrap_or(2)
}

/// `value` in minor units of `currency`, when it has exactly the currency's decimals.
fn minor_of(currency: &str, value: &str) -> Option<i64> {
    let exp = exponent(currency) as usize;
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 10 || !digits(whole) || !digits(frac) || frac.len() != exp
    {
        return None;
    }
    if exp > 0 && !value.contains('.') {
        return None;
    }
    format!("{whole}{frac}").parse().ok()
}

impl FakePayPal {
    pub async fn start() -> Self {
        use axum::extract::{Path, State};
        use axum::http::HeaderMap;
        use axum::routing::{get, post};

        type S = State<Arc<PayPalState>>;

        fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
            headers.get(name).and_then(|v| v.to_str().ok())
        }
        fn base(headers: &HeaderMap) -> String {
            format!("http://{}", header(headers, "host").unwrap_or("127.0.0.1"))
        }
        /// Bearer check, the switches (delay, 5xx); `None` means go on.
        async fn gate(state: &PayPalState, headers: &HeaderMap, line: String) -> Option<Reply> {
            let creating = line == "POST /v2/checkout/orders";
            state.requests.lock().unwrap().push(line);
            if !creating {
                pause(state).await;
            }
            let token = header(headers, "authorization")
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or_default();
            if !state.tokens.lock().unwrap().contains(token) {
                return Some(reply(
                    401,
                    json!({"error": "invalid_token", "error_description": "Token signature verification failed"}),
                ));
            }
            if state
                .fail_5xx
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Some(reply(
                    500,
                    json!({"name": "INTERNAL_SERVER_ERROR", "message": "An internal server error occurred.", "debug_id": "90957fca61718", "links": []}),
                ));
            }
            None
        }
        /// The `delay_ms` switch.
        async fn pause(state: &PayPalState) {
            let delay = state.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
        }
        // A test fake: the refusal is the answer itself, built once per bad request.
        #[allow(clippy::result_large_err)]
        fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, Reply> {
            if !header(headers, "content-type").is_some_and(|c| c.starts_with("application/json")) {
                return Err(paypal_error(
                    415,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "UNSUPPORTED_MEDIA_TYPE",
                    "The request payload is not supported.",
                ));
            }
            serde_json::from_slice(body).map_err(|_| {
                paypal_error(
                    400,
                    "INVALID_REQUEST",
                    "MALFORMED_REQUEST_JSON",
                    "The request JSON is not well formed.",
                )
            })
        }
        fn represent(headers: &HeaderMap, order: Value) -> Value {
            if header(headers, "prefer") == Some("return=representation") {
                order
            } else {
                minimal(order)
            }
        }
        /// Drops the connection with no answer (the unwind ends the connection's task
        /// without running the panic hook).
        fn drop_connection() -> ! {
            std::panic::resume_unwind(Box::new("fake paypal drops the connection"))
        }

        async fn token(State(state): S, headers: HeaderMap, body: String) -> Reply {
            use base64::Engine;
            state.token_requests.fetch_add(1, Ordering::SeqCst);
            state
                .requests
                .lock()
                .unwrap()
                .push("POST /v1/oauth2/token".into());
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{PAYPAL_CLIENT_ID}:{PAYPAL_CLIENT_SECRET}"))
            );
            if header(&headers, "authorization") != Some(expected.as_str()) {
                return reply(
                    401,
                    json!({"error": "invalid_client", "error_description": "Client Authentication failed"}),
                );
            }
            if !body
                .split('&')
                .any(|p| p == "grant_type=client_credentials")
            {
                return reply(
                    400,
                    json!({"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"}),
                );
            }
            let access = format!("A21AA{}", uuid::Uuid::new_v4().simple());
            state.tokens.lock().unwrap().insert(access.clone());
            reply(
                200,
                json!({
                    "scope": "https://uri.paypal.com/services/payments/payment https://uri.paypal.com/services/vault/payment-tokens/readwrite",
                    "access_token": access,
                    "token_type": "Bearer",
                    "app_id": "APP-80W284485P519543T",
                    "expires_in": 32400,
                    "nonce": format!("2026-01-01T00:00:00Z{}", rand_id()),
                }),
            )
        }

        async fn create(State(state): S, headers: HeaderMap, body: axum::body::Bytes) -> Reply {
            if let Some(reply) = gate(&state, &headers, "POST /v2/checkout/orders".into()).await {
                return reply;
            }
            let request = match json_body(&headers, &body) {
                Ok(v) => v,
                Err(e) => return e,
            };
            let base = base(&headers);
            let request_id = header(&headers, "paypal-request-id").map(str::to_owned);
            // Validate before anything is kept (PayPal's INVALID_REQUEST / 422 shapes).
            if request["intent"].as_str() != Some("CAPTURE") {
                return paypal_error(
                    400,
                    "INVALID_REQUEST",
                    "INVALID_PARAMETER_VALUE",
                    "intent must be CAPTURE or AUTHORIZE (the fake knows CAPTURE).",
                );
            }
            let unit = &request["purchase_units"][0];
            let (Some(currency), Some(value)) = (
                unit["amount"]["currency_code"].as_str(),
                unit["amount"]["value"].as_str(),
            ) else {
                return paypal_error(
                    400,
                    "INVALID_REQUEST",
                    "MISSING_REQUIRED_PARAMETER",
                    "purchase_units[0].amount.currency_code and value are required.",
                );
            };
            if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return paypal_error(
                    422,
                    "UNPROCESSABLE_ENTITY",
                    "CURRENCY_NOT_SUPPORTED",
                    "Currency code is not supported.",
                );
            }
            let Some(minor) = minor_of(currency, value) else {
                return paypal_error(422, "UNPROCESSABLE_ENTITY", "DECIMAL_PRECISION", "If the currency supports decimals, only two decimal place precision is supported.");
            };
            if minor <= 0 {
                return paypal_error(
                    422,
                    "UNPROCESSABLE_ENTITY",
                    "AMOUNT_NOT_POSITIVE",
                    "Amount must be greater than zero.",
                );
            }
            let source = &request["payment_source"];
            let vault_id = source["paypal"]["vault_id"]
                .as_str()
                .or_else(|| source["card"]["vault_id"].as_str());
            let Some(vault_id) = vault_id.filter(|v| !v.is_empty()) else {
                return paypal_error(400, "INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER", "payment_source.paypal.vault_id (or card.vault_id) is required for a merchant-initiated charge.");
            };
            // Creating takes `delay_ms`; a second request with the id of one still being
            // processed fails (PayPal "processes the first request and might fail the second").
            let known = |key: &String| state.store.lock().unwrap().create_keys.contains_key(key);
            let _in_flight = match &request_id {
                Some(key) if !known(key) => {
                    if !state.in_flight.lock().unwrap().insert(key.clone()) {
                        return paypal_error(409, "RESOURCE_CONFLICT", "PREVIOUS_REQUEST_IN_PROGRESS", "A previous request with this PayPal-Request-Id is still being processed.");
                    }
                    Some(InFlight {
                        state: state.clone(),
                        key: key.clone(),
                    })
                }
                _ => None,
            };
            pause(&state).await;
            let mut store = state.store.lock().unwrap();
            if let Some(existing) = request_id
                .as_ref()
                .and_then(|k| store.create_keys.get(k))
                .cloned()
            {
                let order = order_json(&store.orders[&existing], &base);
                return reply(200, represent(&headers, order));
            }
            if vault_id == VAULT_DECLINED {
                return paypal_error(422, "UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED", "The instrument presented was either declined by the processor or bank, or it can't be used for this payment.");
            }
            let id = state.id("");
            let (status, capture) = if vault_id == VAULT_PAYER_ACTION {
                ("PAYER_ACTION_REQUIRED", None)
            } else {
                let capture_id = state.id("C");
                store.captures.insert(capture_id.clone(), id.clone());
                (
                    "COMPLETED",
                    Some(FakeCapture {
                        id: capture_id,
                        refunds: Vec::new(),
                    }),
                )
            };
            let mut purchase_unit = unit.clone();
            if let Some(u) = purchase_unit.as_object_mut() {
                u.remove("payments");
            }
            let order = FakeOrder {
                id: id.clone(),
                status: status.into(),
                currency: currency.into(),
                value: value.into(),
                minor,
                purchase_unit,
                payment_source: source.clone(),
                capture,
            };
            let answer = order_json(&order, &base);
            store.orders.insert(id.clone(), order);
            if let Some(key) = request_id {
                store.create_keys.insert(key, id);
            }
            drop(store);
            if state
                .drop_after_charge
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                drop_connection();
            }
            reply(201, represent(&headers, answer))
        }

        async fn read(State(state): S, headers: HeaderMap, Path(id): Path<String>) -> Reply {
            if let Some(reply) =
                gate(&state, &headers, format!("GET /v2/checkout/orders/{id}")).await
            {
                return reply;
            }
            let store = state.store.lock().unwrap();
            match store.orders.get(&id) {
                Some(order) => reply(200, order_json(order, &base(&headers))),
                None => paypal_error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Specified resource ID does not exist. Please check the resource ID and try again."),
            }
        }

        async fn capture(State(state): S, headers: HeaderMap, Path(id): Path<String>) -> Reply {
            if let Some(reply) = gate(
                &state,
                &headers,
                format!("POST /v2/checkout/orders/{id}/capture"),
            )
            .await
            {
                return reply;
            }
            let base = base(&headers);
            let request_id = header(&headers, "paypal-request-id").map(str::to_owned);
            let mut store = state.store.lock().unwrap();
            if let Some(existing) = request_id
                .as_ref()
                .and_then(|k| store.capture_keys.get(k))
                .cloned()
            {
                let order = order_json(&store.orders[&existing], &base);
                return reply(200, represent(&headers, order));
            }
            let capture_id = state.id("C");
            let Some(order) = store.orders.get_mut(&id) else {
                return paypal_error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Specified resource ID does not exist. Please check the resource ID and try again.");
            };
            match order.status.as_str() {
                "APPROVED" => {}
                "COMPLETED" => {
                    return paypal_error(422, "UNPROCESSABLE_ENTITY", "ORDER_ALREADY_CAPTURED", "Order already captured. If 'intent=CAPTURE' only one capture per order is allowed.")
                }
                _ => {
                    return paypal_error(422, "UNPROCESSABLE_ENTITY", "PAYER_ACTION_REQUIRED", "Payer needs to perform the following action before proceeding with payment.")
                }
            }
            order.status = "COMPLETED".into();
            order.capture = Some(FakeCapture {
                id: capture_id.clone(),
                refunds: Vec::new(),
            });
            let answer = order_json(order, &base);
            store.captures.insert(capture_id, id.clone());
            if let Some(key) = request_id {
                store.capture_keys.insert(key, id);
            }
            reply(201, represent(&headers, answer))
        }

        async fn refund(
            State(state): S,
            headers: HeaderMap,
            Path(capture_id): Path<String>,
            body: axum::body::Bytes,
        ) -> Reply {
            if let Some(reply) = gate(
                &state,
                &headers,
                format!("POST /v2/payments/captures/{capture_id}/refund"),
            )
            .await
            {
                return reply;
            }
            let request = if body.is_empty() {
                json!({})
            } else {
                match json_body(&headers, &body) {
                    Ok(v) => v,
                    Err(e) => return e,
                }
            };
            let base = base(&headers);
            let refund_json = |id: &str, value: &str, currency: &str| {
                json!({
                    "id": id,
                    "status": "COMPLETED",
                    "amount": {"currency_code": currency, "value": value},
                    "links": [{"href": format!("{base}/v2/payments/refunds/{id}"), "rel": "self", "method": "GET"}],
                })
            };
            let request_id = header(&headers, "paypal-request-id").map(str::to_owned);
            let mut store = state.store.lock().unwrap();
            let Some(order_id) = store.captures.get(&capture_id).cloned() else {
                return paypal_error(404, "RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID", "Specified resource ID does not exist. Please check the resource ID and try again.");
            };
            let currency = store.orders[&order_id].currency.clone();
            if let Some((seen, refund_id)) = request_id
                .as_ref()
                .and_then(|k| store.refund_keys.get(k))
                .cloned()
            {
                if seen != capture_id {
                    return paypal_error(
                        422,
                        "UNPROCESSABLE_ENTITY",
                        "DUPLICATE_REQUEST_ID",
                        "The PayPal-Request-Id was used for another capture.",
                    );
                }
                let order = &store.orders[&order_id];
                let refund = order
                    .capture
                    .as_ref()
                    .and_then(|c| c.refunds.iter().find(|r| r.0 == refund_id))
                    .unwrap();
                return reply(200, refund_json(&refund_id, &refund.2, &currency));
            }
            let order = store.orders.get_mut(&order_id).unwrap();
            let capture = order.capture.as_mut().unwrap();
            let left = order.minor - capture.refunds.iter().map(|r| r.1).sum::<i64>();
            let (minor, value) = match (
                request["amount"]["value"].as_str(),
                request["amount"]["currency_code"].as_str(),
            ) {
                (None, None) => (
                    left,
                    ocart_domain::format_decimal(left, exponent(&currency)),
                ),
                (Some(value), Some(code)) if code == currency => match minor_of(&currency, value) {
                    Some(minor) if minor > 0 => (minor, value.to_owned()),
                    _ => {
                        return paypal_error(
                            422,
                            "UNPROCESSABLE_ENTITY",
                            "DECIMAL_PRECISION",
                            "The amount value is not valid for the currency.",
                        )
                    }
                },
                (Some(_), Some(_)) => {
                    return paypal_error(
                        422,
                        "UNPROCESSABLE_ENTITY",
                        "REFUND_CURRENCY_MISMATCH",
                        "Refund must be in the same currency as the capture.",
                    )
                }
                _ => {
                    return paypal_error(
                        400,
                        "INVALID_REQUEST",
                        "MISSING_REQUIRED_PARAMETER",
                        "amount.value and amount.currency_code go together.",
                    )
                }
            };
            if left == 0 {
                return paypal_error(
                    422,
                    "UNPROCESSABLE_ENTITY",
                    "CAPTURE_FULLY_REFUNDED",
                    "The capture has already been fully refunded.",
                );
            }
            if minor > left {
                return paypal_error(422, "UNPROCESSABLE_ENTITY", "REFUND_AMOUNT_EXCEEDED", "The refund amount must be less than or equal to the capture amount that has not yet been refunded.");
            }
            let refund_id = state.id("R");
            capture
                .refunds
                .push((refund_id.clone(), minor, value.clone()));
            if let Some(key) = request_id {
                store
                    .refund_keys
                    .insert(key, (capture_id.clone(), refund_id.clone()));
            }
            reply(201, refund_json(&refund_id, &value, &currency))
        }

        async fn verify(State(state): S, headers: HeaderMap, body: axum::body::Bytes) -> Reply {
            if let Some(reply) = gate(
                &state,
                &headers,
                "POST /v1/notifications/verify-webhook-signature".into(),
            )
            .await
            {
                return reply;
            }
            let request = match json_body(&headers, &body) {
                Ok(v) => v,
                Err(e) => return e,
            };
            let field = |name: &str| request[name].as_str().filter(|s| !s.is_empty());
            let (Some(_algo), Some(_cert), Some(id), Some(sig), Some(_time), Some(webhook_id)) = (
                field("auth_algo"),
                field("cert_url"),
                field("transmission_id"),
                field("transmission_sig"),
                field("transmission_time"),
                field("webhook_id"),
            ) else {
                return paypal_error(400, "VALIDATION_ERROR", "MISSING_REQUIRED_PARAMETER", "auth_algo, cert_url, transmission_id, transmission_sig, transmission_time and webhook_id are required.");
            };
            if !request["webhook_event"].is_object() {
                return paypal_error(
                    400,
                    "VALIDATION_ERROR",
                    "MISSING_REQUIRED_PARAMETER",
                    "webhook_event is required.",
                );
            }
            let event = serde_json::to_vec(&request["webhook_event"]).unwrap();
            let ok = webhook_id == PAYPAL_WEBHOOK_ID && sig == FakePayPal::sign(id, &event);
            reply(
                200,
                json!({"verification_status": if ok { "SUCCESS" } else { "FAILURE" }}),
            )
        }

        let state = Arc::new(PayPalState::default());
        let app = axum::Router::new()
            .route("/v1/oauth2/token", post(token))
            .route("/v2/checkout/orders", post(create))
            .route("/v2/checkout/orders/{id}", get(read))
            .route("/v2/checkout/orders/{id}/capture", post(capture))
            .route("/v2/payments/captures/{id}/refund", post(refund))
            .route("/v1/notifications/verify-webhook-signature", post(verify))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { port, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The adapter's config for this fake (`timeout_secs` 2).
    pub fn config(&self) -> PayPalConfig {
        serde_json::from_value(json!({
            "client_id": PAYPAL_CLIENT_ID,
            "client_secret": PAYPAL_CLIENT_SECRET,
            "webhook_id": PAYPAL_WEBHOOK_ID,
            "api_base": self.base(),
            "timeout_secs": 2,
        }))
        .unwrap()
    }

    /// An adapter pointed at this fake.
    pub fn adapter(&self) -> PayPal {
        PayPal::from_config(&self.config()).unwrap()
    }

    /// Points `config` at this fake (`[gateways.paypal]`).
    pub fn configure(&self, config: &mut Config) {
        config.gateways.paypal = Some(self.config());
    }

    /// The payer approved `order_id` (it was waiting for them): now `APPROVED`.
    pub fn approve(&self, order_id: &str) -> bool {
        let mut store = self.state.store.lock().unwrap();
        match store.orders.get_mut(order_id) {
            Some(order) if order.status == "PAYER_ACTION_REQUIRED" => {
                order.status = "APPROVED".into();
                true
            }
            _ => false,
        }
    }

    /// The next `n` order creates charge, then drop the connection without an answer.
    pub fn drop_after_charge(&self, n: u32) {
        self.state.drop_after_charge.store(n, Ordering::SeqCst);
    }

    /// The next `n` API calls (not token requests) answer 500 and do nothing.
    pub fn fail_5xx_next(&self, n: u32) {
        self.state.fail_5xx.store(n, Ordering::SeqCst);
    }

    /// Every API call waits `ms` before it is handled (0: none); an order create waits after
    /// taking its `PayPal-Request-Id`, so a concurrent request with the same id answers 409.
    pub fn delay_ms(&self, ms: u64) {
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every token issued so far stops being valid (the next API call answers 401).
    pub fn expire_tokens(&self) {
        self.state.tokens.lock().unwrap().clear();
    }

    /// How many token requests arrived (valid or not).
    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// Completed captures, however many requests asked for them.
    pub fn captures(&self) -> usize {
        let store = self.state.store.lock().unwrap();
        store
            .orders
            .values()
            .filter(|o| o.capture.is_some())
            .count()
    }

    /// Orders created.
    pub fn orders(&self) -> usize {
        self.state.store.lock().unwrap().orders.len()
    }

    /// The order as the fake keeps it.
    pub fn order(&self, order_id: &str) -> Option<FakeOrder> {
        self.state
            .store
            .lock()
            .unwrap()
            .orders
            .get(order_id)
            .cloned()
    }

    /// The refunds of `order_id`'s capture, in minor units, in order.
    pub fn refunds_of(&self, order_id: &str) -> Vec<i64> {
        let store = self.state.store.lock().unwrap();
        store
            .orders
            .get(order_id)
            .and_then(|o| o.capture.as_ref())
            .map(|c| c.refunds.iter().map(|r| r.1).collect())
            .unwrap_or_default()
    }

    /// The fake's transmission signature: hex SHA-256 over `transmission_id|webhook id|body`,
    /// the body canonicalised (parsed and written compactly) when it is JSON, so the event
    /// the adapter re-sends verifies against what was delivered.
    pub fn sign(transmission_id: &str, body: &[u8]) -> String {
        use sha2::Digest;
        let canonical = serde_json::from_slice::<Value>(body)
            .map(|v| serde_json::to_vec(&v).unwrap())
            .unwrap_or_else(|_| body.to_vec());
        let mut hash = sha2::Sha256::new();
        hash.update(transmission_id.as_bytes());
        hash.update(b"|");
        hash.update(PAYPAL_WEBHOOK_ID.as_bytes());
        hash.update(b"|");
        hash.update(&canonical);
        hex::encode(hash.finalize())
    }

    /// A webhook as PayPal delivers it: the event body and its `PAYPAL-*` headers, signed.
    pub fn signed_webhook(event_type: &str, order_id: &str) -> (Vec<u8>, Vec<(String, String)>) {
        let event = json!({
            "id": format!("WH-{}", uuid::Uuid::new_v4().simple()),
            "event_version": "1.0",
            "create_time": "2026-01-01T10:00:00.000Z",
            "resource_type": "checkout-order",
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": format!("{event_type} for {order_id}"),
            "resource": {"id": order_id, "status": "COMPLETED", "intent": "CAPTURE"},
            "links": [],
        });
        let body = serde_json::to_vec_pretty(&event).unwrap();
        let transmission_id = uuid::Uuid::new_v4().to_string();
        let headers = vec![
            ("PAYPAL-AUTH-ALGO".into(), "SHA256withRSA".into()),
            (
                "PAYPAL-CERT-URL".into(),
                "https://api-m.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-fake".into(),
            ),
            ("PAYPAL-TRANSMISSION-ID".into(), transmission_id.clone()),
            (
                "PAYPAL-TRANSMISSION-SIG".into(),
                Self::sign(&transmission_id, &body),
            ),
            (
                "PAYPAL-TRANSMISSION-TIME".into(),
                "2026-01-01T10:00:01Z".into(),
            ),
        ];
        (body, headers)
    }
}

impl Drop for FakePayPal {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- Request ids ------------------------------------------------------------------------------
// What each `PayPal-Request-Id` did, as PayPal keeps it: the order a create made, the order a
// capture captured (a replay with the id answers that one).

impl FakePayPal {
    /// The order the create with `PayPal-Request-Id: request_id` made, if one did.
    pub fn order_for_request_id(&self, request_id: &str) -> Option<String> {
        let store = self.state.store.lock().unwrap();
        store.create_keys.get(request_id).cloned()
    }

    /// The order the capture with `PayPal-Request-Id: request_id` captured, if one did.
    pub fn captured_by_request_id(&self, request_id: &str) -> Option<String> {
        let store = self.state.store.lock().unwrap();
        store.capture_keys.get(request_id).cloned()
    }
}
