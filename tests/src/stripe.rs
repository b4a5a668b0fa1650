//! A fake Stripe API (PaymentIntents, Refunds) that keeps Stripe's rules: Bearer auth, form
//! bodies, Stripe's error shapes, idempotency exactly as Stripe documents it (the first answer
//! of a key replayed, `idempotency_error` for other parameters, 409 `idempotency_key_in_use`
//! while the first is running), and test payment methods like Stripe's test cards. Switches
//! make the failures a charger must survive: declines, a connection dropped after the charge,
//! slow creates, 5xx.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use ocart_api::Config;
use ocart_processors::gateways::stripe::StripeConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The one secret key the fake accepts.
pub const STRIPE_KEY: &str = "sk_test_ocart";
/// The webhook signing secret [`FakeStripe::configure`] sets and [`FakeStripe::signed_event`]
/// signs with.
pub const STRIPE_WEBHOOK_SECRET: &str = "whsec_ocart_test";

/// Test payment methods, as Stripe's test cards behave. Any other method succeeds.
pub const PM_VISA: &str = "pm_card_visa";
pub const PM_DECLINED: &str = "pm_card_chargeDeclined";
pub const PM_INSUFFICIENT_FUNDS: &str = "pm_card_chargeDeclinedInsufficientFunds";
pub const PM_3DS: &str = "pm_card_authenticationRequired";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct StripeRequest {
    pub method: String,
    pub path: String,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The form body as sent, in order.
    pub params: Vec<(String, String)>,
}

impl StripeRequest {
    /// The first value of form parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What an idempotency key holds.
enum Idempotent {
    /// The first request with the key is still running.
    InFlight {
        endpoint: String,
        params: Vec<(String, String)>,
    },
    /// The first request's answer, replayed to every repeat.
    Done {
        endpoint: String,
        params: Vec<(String, String)>,
        status: StatusCode,
        body: Value,
    },
}

#[derive(Default)]
struct Inner {
    intents: HashMap<String, Value>,
    /// PaymentIntent id → its refunds, in order.
    refunds: HashMap<String, Vec<Value>>,
    keys: HashMap<String, Idempotent>,
    requests: Vec<StripeRequest>,
    creates: usize,
    next_id: u64,
    decline_next: usize,
    drop_after_charge: usize,
    fail_5xx_next: usize,
    delay_ms: u64,
}

/// The fake's state, shared with its handlers.
#[derive(Default)]
pub struct StripeState {
    inner: Mutex<Inner>,
    port: std::sync::OnceLock<u16>,
    /// Creates charged and then held unanswered (see "Charge, then hold" below).
    hold: Hold,
}

/// A fake Stripe API on 127.0.0.1, port 0.
pub struct FakeStripe {
    pub port: u16,
    pub state: Arc<StripeState>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeStripe {
    pub async fn start() -> Self {
        let state = Arc::new(StripeState::default());
        let app = axum::Router::new()
            .route("/v1/payment_intents", axum::routing::post(create_intent))
            .route("/v1/payment_intents/{id}", axum::routing::get(get_intent))
            .route("/v1/refunds", axum::routing::post(create_refund))
            .fallback(not_found)
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        state.port.set(port).ok();
        let task = tokio::spawn(async move {
            axum::serve(
                DroppingListener(listener),
                app.into_make_service_with_connect_info::<Conn>(),
            )
            .await
            .ok();
        });
        Self { port, state, task }
    }

    /// `http://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `[gateways.stripe]` pointing at this fake with [`STRIPE_KEY`].
    pub fn stripe_config(&self) -> StripeConfig {
        self.stripe_config_with_key(STRIPE_KEY)
    }

    /// `[gateways.stripe]` pointing at this fake with another key (to see it refused).
    pub fn stripe_config_with_key(&self, key: &str) -> StripeConfig {
        serde_json::from_value(json!({
            "secret_key": key,
            "api_base": self.url(),
            "webhook_secrets": [STRIPE_WEBHOOK_SECRET],
            "timeout_secs": 10,
        }))
        .expect("a StripeConfig")
    }

    /// Points `config`'s Stripe gateway at this fake.
    pub fn configure(&self, config: &mut Config) {
        config.gateways.stripe = Some(self.stripe_config());
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.state.inner.lock().unwrap()
    }

    /// The next `n` creates are declined (`card_declined`, `generic_decline`) whatever the
    /// payment method.
    pub fn decline_next(&self, n: usize) {
        self.inner().decline_next = n;
    }

    /// The next `n` creates charge, store their answer under their key, and then drop the
    /// connection without answering.
    pub fn drop_after_charge(&self, n: usize) {
        self.inner().drop_after_charge = n;
    }

    /// Holds every create this long before it decides (so concurrent requests overlap).
    pub fn delay_ms(&self, ms: u64) {
        self.inner().delay_ms = ms;
    }

    /// The next `n` creates fail with 500 `api_error` after execution began (so, as Stripe
    /// documents, the 500 is the answer stored under their key), charging nothing.
    pub fn fail_5xx_next(&self, n: usize) {
        self.inner().fail_5xx_next = n;
    }

    /// PaymentIntents that reached `succeeded`, however many requests were made.
    pub fn charges(&self) -> usize {
        self.inner()
            .intents
            .values()
            .filter(|pi| pi["status"] == "succeeded")
            .count()
    }

    /// Create requests received (`POST /v1/payment_intents`), replays and refusals included.
    pub fn creates(&self) -> usize {
        self.inner().creates
    }

    /// The refunds of one PaymentIntent, in order.
    pub fn refunds_of(&self, pi: &str) -> Vec<Value> {
        self.inner().refunds.get(pi).cloned().unwrap_or_default()
    }

    /// A PaymentIntent as Stripe would answer it (`Value::Null` when there is none).
    pub fn intent(&self, pi: &str) -> Value {
        self.inner().intents.get(pi).cloned().unwrap_or(Value::Null)
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<StripeRequest> {
        self.inner().requests.clone()
    }

    /// The shopper finished 3DS for `pi`: a `requires_action` intent moves to `succeeded`.
    /// False when there is no such intent waiting.
    pub fn complete_3ds(&self, pi: &str) -> bool {
        let mut inner = self.inner();
        match inner.intents.get_mut(pi) {
            Some(intent) if intent["status"] == "requires_action" => {
                intent["status"] = json!("succeeded");
                intent["next_action"] = Value::Null;
                intent["amount_received"] = intent["amount"].clone();
                true
            }
            _ => false,
        }
    }

    /// The shopper failed 3DS for `pi`: back to `requires_payment_method` with Stripe's
    /// `payment_intent_authentication_failure`.
    pub fn fail_3ds(&self, pi: &str) -> bool {
        let mut inner = self.inner();
        match inner.intents.get_mut(pi) {
            Some(intent) if intent["status"] == "requires_action" => {
                intent["status"] = json!("requires_payment_method");
                intent["next_action"] = Value::Null;
                intent["last_payment_error"] = json!({
                    "type": "invalid_request_error",
                    "code": "payment_intent_authentication_failure",
                    "message": "The provided PaymentMethod has failed authentication. You can provide payment_method_data or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
                });
                true
            }
            _ => false,
        }
    }

    /// A Stripe event about `pi_id` (`{"id":"evt_…","type":…,"data":{"object":intent}}`) and
    /// its `Stripe-Signature` header under [`STRIPE_WEBHOOK_SECRET`], signed now.
    pub fn signed_event(&self, event_type: &str, pi_id: &str) -> (Vec<u8>, String) {
        self.signed_event_at(event_type, pi_id, chrono::Utc::now().timestamp())
    }

    /// [`FakeStripe::signed_event`] signed at `t` (Unix seconds).
    pub fn signed_event_at(&self, event_type: &str, pi_id: &str, t: i64) -> (Vec<u8>, String) {
        let id = {
            let mut inner = self.inner();
            next_id(&mut inner, "evt")
        };
        let event = json!({
            "id": id,
            "object": "event",
            "api_version": ocart_processors::gateways::stripe::STRIPE_VERSION,
            "created": t,
            "livemode": false,
            "pending_webhooks": 1,
            "type": event_type,
            "data": {"object": self.intent(pi_id)},
        });
        let body = serde_json::to_vec(&event).unwrap();
        let header = ocart_api::gateways::stripe_signature::sign(&body, STRIPE_WEBHOOK_SECRET, t);
        (body, header)
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn next_id(inner: &mut Inner, prefix: &str) -> String {
    inner.next_id += 1;
    format!("{prefix}_3Ocart{:016}", inner.next_id)
}

/// A listener whose connections a handler can drop without an answer: the handler marks its
/// connection ([`Conn::drop_without_answer`]) and every later read or write on it fails, so
/// the response is never written and the socket is closed.
struct DroppingListener(TcpListener);

/// The per-connection switch a handler sees (as `ConnectInfo`).
#[derive(Clone, Debug)]
struct Conn(Arc<AtomicBool>);

impl Conn {
    fn drop_without_answer(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct DroppableIo {
    inner: TcpStream,
    dropped: Arc<AtomicBool>,
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "dropped by FakeStripe")
}

impl AsyncRead for DroppableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.dropped.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DroppableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.dropped.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.dropped.load(Ordering::SeqCst) {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl axum::serve::Listener for DroppingListener {
    type Io = DroppableIo;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let dropped = Arc::new(AtomicBool::new(false));
                    return (
                        DroppableIo {
                            inner: stream,
                            dropped: dropped.clone(),
                        },
                        Conn(dropped),
                    );
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Conn(Arc::new(AtomicBool::new(false))))
    }
}

impl Connected<axum::serve::IncomingStream<'_, DroppingListener>> for Conn {
    fn connect_info(stream: axum::serve::IncomingStream<'_, DroppingListener>) -> Self {
        stream.remote_addr().clone()
    }
}

fn error(status: StatusCode, error: Value) -> (StatusCode, Value) {
    (status, json!({ "error": error }))
}

fn invalid(code: &str, param: &str, message: &str) -> (StatusCode, Value) {
    error(
        StatusCode::BAD_REQUEST,
        json!({"type": "invalid_request_error", "code": code, "param": param, "message": message}),
    )
}

fn reply(status: StatusCode, body: Value, replayed: bool) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        "request-id",
        axum::http::HeaderValue::from_static("req_ocart"),
    );
    if replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `Authorization: Bearer sk_test_ocart` (or basic auth with the key as user, as Stripe
/// accepts), else Stripe's 401.
fn authorised(headers: &HeaderMap) -> Result<(), (StatusCode, Value)> {
    let given = header(headers, "authorization").unwrap_or_default();
    let basic = {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{STRIPE_KEY}:"))
        )
    };
    if given == format!("Bearer {STRIPE_KEY}") || given == basic {
        return Ok(());
    }
    let message = match given.strip_prefix("Bearer ") {
        Some(key) if key.len() > 4 => format!(
            "Invalid API Key provided: {}****{}",
            &key[..key.len().min(8)],
            &key[key.len() - 4..]
        ),
        _ => "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').".to_owned(),
    };
    Err(error(
        StatusCode::UNAUTHORIZED,
        json!({"type": "invalid_request_error", "message": message}),
    ))
}

/// An `application/x-www-form-urlencoded` body (`+` is a space, `%XX` a byte).
fn parse_form(body: &[u8]) -> Option<Vec<(String, String)>> {
    fn decode(raw: &str) -> Option<String> {
        let bytes = raw.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = raw.get(i + 1..i + 3)?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    }
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn sorted(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut sorted = params.to_vec();
    sorted.sort();
    sorted
}

/// What the idempotency layer decided before the endpoint runs.
enum Gate {
    /// Run the endpoint (the key, if any, is now in flight).
    Run,
    /// Answer this without running (a replay or a refusal).
    Answer(Response),
}

fn idempotency_gate(
    state: &StripeState,
    key: Option<&str>,
    endpoint: &str,
    params: &[(String, String)],
) -> Gate {
    let Some(key) = key else {
        return Gate::Run;
    };
    let mut inner = state.inner.lock().unwrap();
    let params = sorted(params);
    match inner.keys.get(key) {
        None => {
            inner.keys.insert(
                key.to_owned(),
                Idempotent::InFlight {
                    endpoint: endpoint.to_owned(),
                    params,
                },
            );
            Gate::Run
        }
        Some(Idempotent::InFlight { .. }) => {
            let (status, body) = error(
                StatusCode::CONFLICT,
                json!({"type": "invalid_request_error", "code": "idempotency_key_in_use",
                       "message": "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): ".to_owned() + key + ". Please try again later."}),
            );
            Gate::Answer(reply(status, body, false))
        }
        Some(Idempotent::Done {
            endpoint: first_endpoint,
            params: first_params,
            status,
            body,
        }) => {
            if first_endpoint != endpoint {
                let (status, body) = error(
                    StatusCode::BAD_REQUEST,
                    json!({"type": "idempotency_error",
                           "message": format!("Keys for idempotent requests can only be used for the same endpoint they were first used for ('{first_endpoint}' vs '{endpoint}'). Try using a key other than '{key}' if you meant to execute a different request.")}),
                );
                Gate::Answer(reply(status, body, false))
            } else if *first_params != params {
                let (status, body) = error(
                    StatusCode::BAD_REQUEST,
                    json!({"type": "idempotency_error",
                           "message": format!("Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{key}' if you meant to execute a different request.")}),
                );
                Gate::Answer(reply(status, body, false))
            } else {
                Gate::Answer(reply(*status, body.clone(), true))
            }
        }
    }
}

/// Stores the endpoint's answer under the key (execution began), or forgets the key when the
/// request was refused before executing (`stored` false: validation), as Stripe does.
fn idempotency_finish(
    state: &StripeState,
    key: Option<&str>,
    stored: bool,
    status: StatusCode,
    body: &Value,
) {
    let Some(key) = key else {
        return;
    };
    let mut inner = state.inner.lock().unwrap();
    if !stored {
        inner.keys.remove(key);
        return;
    }
    if let Some(Idempotent::InFlight { endpoint, params }) = inner.keys.remove(key) {
        inner.keys.insert(
            key.to_owned(),
            Idempotent::Done {
                endpoint,
                params,
                status,
                body: body.clone(),
            },
        );
    }
}

fn record(
    state: &StripeState,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    params: &[(String, String)],
) {
    state.inner.lock().unwrap().requests.push(StripeRequest {
        method: method.to_owned(),
        path: path.to_owned(),
        idempotency_key: header(headers, "idempotency-key"),
        stripe_version: header(headers, "stripe-version"),
        user_agent: header(headers, "user-agent"),
        content_type: header(headers, "content-type"),
        params: params.to_vec(),
    });
}

/// Parameter validation (before execution: not stored under the key).
fn validate_create(
    params: &[(String, String)],
) -> Result<(i64, String, String), (StatusCode, Value)> {
    let amount = param(params, "amount").ok_or_else(|| {
        invalid(
            "parameter_missing",
            "amount",
            "Missing required param: amount.",
        )
    })?;
    let amount: i64 = amount.parse().map_err(|_| {
        invalid(
            "parameter_invalid_integer",
            "amount",
            &format!("Invalid integer: {amount}"),
        )
    })?;
    if amount < 1 {
        return Err(invalid(
            "amount_too_small",
            "amount",
            "Amount must be at least 1 minor unit",
        ));
    }
    let currency = param(params, "currency").ok_or_else(|| {
        invalid(
            "parameter_missing",
            "currency",
            "Missing required param: currency.",
        )
    })?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid(
            "parameter_invalid_string",
            "currency",
            &format!("Invalid currency: {currency}."),
        ));
    }
    let confirm = param(params, "confirm") == Some("true");
    let method = param(params, "payment_method").unwrap_or("").to_owned();
    if confirm && method.is_empty() {
        return Err(invalid(
            "parameter_missing",
            "payment_method",
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
        ));
    }
    if let Some(types) = params
        .iter()
        .find(|(k, v)| k.starts_with("payment_method_types") && v != "card")
    {
        return Err(invalid(
            "parameter_invalid_string",
            "payment_method_types",
            &format!("The payment method type {:?} is invalid.", types.1),
        ));
    }
    Ok((amount, currency.to_ascii_lowercase(), method))
}

async fn create_intent(
    State(state): State<Arc<StripeState>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(params) = parse_form(&body) else {
        let (status, body) = invalid("parameter_invalid_string", "", "Invalid request body.");
        return reply(status, body, false);
    };
    record(&state, "POST", "/v1/payment_intents", &headers, &params);
    state.inner.lock().unwrap().creates += 1;
    if let Err((status, body)) = authorised(&headers) {
        return reply(status, body, false);
    }
    let key = header(&headers, "idempotency-key");
    match idempotency_gate(&state, key.as_deref(), "/v1/payment_intents", &params) {
        Gate::Answer(response) => return response,
        Gate::Run => {}
    }
    let (amount, currency, method) = match validate_create(&params) {
        Ok(valid) => valid,
        Err((status, body)) => {
            idempotency_finish(&state, key.as_deref(), false, status, &body);
            return reply(status, body, false);
        }
    };
    let delay = state.inner.lock().unwrap().delay_ms;
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let port = state.port.get().copied().unwrap_or_default();
    let (status, answer, drop_it) = {
        let mut inner = state.inner.lock().unwrap();
        let drop_it = inner.drop_after_charge > 0;
        if inner.fail_5xx_next > 0 {
            inner.fail_5xx_next -= 1;
            let (status, body) = error(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"type": "api_error", "message": "An unknown error occurred (FakeStripe)."}),
            );
            (status, body, false)
        } else {
            let id = next_id(&mut inner, "pi");
            let metadata: serde_json::Map<String, Value> = params
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("metadata[")
                        .and_then(|k| k.strip_suffix(']'))
                        .map(|k| (k.to_owned(), json!(v)))
                })
                .collect();
            let mut intent = json!({
                "id": id,
                "object": "payment_intent",
                "amount": amount,
                "amount_received": 0,
                "currency": currency,
                "customer": param(&params, "customer"),
                "description": param(&params, "description"),
                "payment_method": method,
                "payment_method_types": ["card"],
                "confirmation_method": "automatic",
                "capture_method": "automatic",
                "client_secret": format!("{id}_secret_ocart{}", inner.next_id),
                "livemode": false,
                "metadata": metadata,
                "next_action": null,
                "last_payment_error": null,
                "status": "requires_confirmation",
            });
            let confirm = param(&params, "confirm") == Some("true");
            let decline = if !confirm {
                None
            } else if inner.decline_next > 0 {
                inner.decline_next -= 1;
                Some("generic_decline")
            } else if method == PM_DECLINED {
                Some("generic_decline")
            } else if method == PM_INSUFFICIENT_FUNDS {
                Some("insufficient_funds")
            } else {
                None
            };
            let answer = if !confirm {
                (StatusCode::OK, intent.clone())
            } else if let Some(decline_code) = decline {
                let message = if decline_code == "insufficient_funds" {
                    "Your card has insufficient funds."
                } else {
                    "Your card was declined."
                };
                let failure = json!({
                    "type": "card_error", "code": "card_declined", "decline_code": decline_code,
                    "message": message, "payment_method": {"id": method, "object": "payment_method"},
                });
                intent["status"] = json!("requires_payment_method");
                intent["last_payment_error"] = failure.clone();
                let mut error_body = failure;
                error_body["payment_intent"] = intent.clone();
                error(StatusCode::PAYMENT_REQUIRED, error_body)
            } else if method == PM_3DS {
                intent["status"] = json!("requires_action");
                intent["next_action"] = json!({
                    "type": "redirect_to_url",
                    "redirect_to_url": {
                        "url": format!("http://127.0.0.1:{port}/3ds/{id}"),
                        "return_url": param(&params, "return_url"),
                    },
                });
                (StatusCode::OK, intent.clone())
            } else {
                intent["status"] = json!("succeeded");
                intent["amount_received"] = json!(amount);
                (StatusCode::OK, intent.clone())
            };
            inner.intents.insert(id, intent);
            if drop_it {
                inner.drop_after_charge -= 1;
            }
            (answer.0, answer.1, drop_it)
        }
    };
    idempotency_finish(&state, key.as_deref(), true, status, &answer);
    state.hold.hold_here().await;
    if drop_it {
        conn.drop_without_answer();
    }
    reply(status, answer, false)
}

async fn get_intent(
    State(state): State<Arc<StripeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    record(
        &state,
        "GET",
        &format!("/v1/payment_intents/{id}"),
        &headers,
        &[],
    );
    if let Err((status, body)) = authorised(&headers) {
        return reply(status, body, false);
    }
    match state.inner.lock().unwrap().intents.get(&id) {
        Some(intent) => reply(StatusCode::OK, intent.clone(), false),
        None => {
            let (status, body) = error(
                StatusCode::NOT_FOUND,
                json!({"type": "invalid_request_error", "code": "resource_missing", "param": "intent",
                       "message": format!("No such payment_intent: '{id}'")}),
            );
            reply(status, body, false)
        }
    }
}

async fn create_refund(
    State(state): State<Arc<StripeState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(params) = parse_form(&body) else {
        let (status, body) = invalid("parameter_invalid_string", "", "Invalid request body.");
        return reply(status, body, false);
    };
    record(&state, "POST", "/v1/refunds", &headers, &params);
    if let Err((status, body)) = authorised(&headers) {
        return reply(status, body, false);
    }
    let key = header(&headers, "idempotency-key");
    match idempotency_gate(&state, key.as_deref(), "/v1/refunds", &params) {
        Gate::Answer(response) => return response,
        Gate::Run => {}
    }
    // Validation: not stored under the key.
    let validated = (|| {
        let pi = param(&params, "payment_intent").ok_or_else(|| {
            invalid(
                "parameter_missing",
                "payment_intent",
                "One of the following params should be provided for this request: payment_intent or charge.",
            )
        })?;
        let amount = match param(&params, "amount") {
            None => None,
            Some(raw) => match raw.parse::<i64>() {
                Ok(a) if a >= 1 => Some(a),
                _ => {
                    return Err(invalid(
                        "parameter_invalid_integer",
                        "amount",
                        &format!("Invalid positive integer: {raw}"),
                    ))
                }
            },
        };
        if let Some(reason) = param(&params, "reason") {
            if !["duplicate", "fraudulent", "requested_by_customer"].contains(&reason) {
                return Err(invalid(
                    "parameter_invalid_string",
                    "reason",
                    &format!("Invalid reason: must be one of duplicate, fraudulent, or requested_by_customer (got {reason:?})"),
                ));
            }
        }
        Ok((pi.to_owned(), amount))
    })();
    let (pi, amount) = match validated {
        Ok(valid) => valid,
        Err((status, body)) => {
            idempotency_finish(&state, key.as_deref(), false, status, &body);
            return reply(status, body, false);
        }
    };
    let (status, answer) = {
        let mut inner = state.inner.lock().unwrap();
        match inner.intents.get(&pi).cloned() {
            None => invalid(
                "resource_missing",
                "payment_intent",
                &format!("No such payment_intent: '{pi}'"),
            ),
            Some(intent) if intent["status"] != "succeeded" => invalid(
                "charge_not_refundable",
                "payment_intent",
                &format!("This PaymentIntent ({pi}) does not have a successful charge to refund."),
            ),
            Some(intent) => {
                let charged = intent["amount_received"].as_i64().unwrap_or(0);
                let refunded: i64 = inner
                    .refunds
                    .get(&pi)
                    .map(|rs| rs.iter().filter_map(|r| r["amount"].as_i64()).sum())
                    .unwrap_or(0);
                let left = charged - refunded;
                let amount = amount.unwrap_or(left);
                if left <= 0 {
                    invalid(
                        "charge_already_refunded",
                        "",
                        &format!("Charge for PaymentIntent {pi} has already been refunded."),
                    )
                } else if amount > left {
                    invalid(
                        "amount_too_large",
                        "amount",
                        &format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"),
                    )
                } else {
                    let id = next_id(&mut inner, "re");
                    let refund = json!({
                        "id": id,
                        "object": "refund",
                        "amount": amount,
                        "currency": intent["currency"],
                        "payment_intent": pi,
                        "reason": param(&params, "reason"),
                        "status": "succeeded",
                    });
                    inner.refunds.entry(pi).or_default().push(refund.clone());
                    (StatusCode::OK, refund)
                }
            }
        }
    };
    idempotency_finish(&state, key.as_deref(), true, status, &answer);
    reply(status, answer, false)
}

async fn not_found(headers: HeaderMap, uri: axum::http::Uri) -> Response {
    if let Err((status, body)) = authorised(&headers) {
        return reply(status, body, false);
    }
    let (status, body) = error(
        StatusCode::NOT_FOUND,
        json!({"type": "invalid_request_error",
               "message": format!("Unrecognized request URL (GET: {}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.", uri.path())}),
    );
    reply(status, body, false)
}

// ---- Charge, then hold ----------------------------------------------------------------------
// A create that charges, stores its answer under its key, and then holds the answer unsent
// until released: what a client sees of a gateway when the client dies between the gateway's
// charge and its answer. After a release the key answers the stored first outcome, as Stripe's
// replays do.

/// A switch a fake's handler passes through once its work is done: while armed, the answer is
/// held (the work stays done) until [`Hold::release`].
pub struct Hold {
    armed: AtomicBool,
    /// Answers held so far (ever, not only now).
    held: tokio::sync::watch::Sender<usize>,
    released: tokio::sync::watch::Sender<bool>,
}

impl Default for Hold {
    fn default() -> Self {
        Self {
            armed: AtomicBool::new(false),
            held: tokio::sync::watch::channel(0).0,
            released: tokio::sync::watch::channel(false).0,
        }
    }
}

impl Hold {
    /// From now on, every answer is held until [`Hold::release`].
    pub fn arm(&self) {
        self.released.send_replace(false);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// New answers are not held any more; those held stay held until [`Hold::release`].
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Back to normal: held answers are sent (to whoever still listens), new ones are not held.
    pub fn release(&self) {
        self.armed.store(false, Ordering::SeqCst);
        self.released.send_replace(true);
    }

    /// How many answers were held so far.
    pub fn held(&self) -> usize {
        *self.held.borrow()
    }

    /// Waits until `n` answers were held (the caller bounds the wait).
    pub async fn until_held(&self, n: usize) {
        let mut held = self.held.subscribe();
        let _ = held.wait_for(|h| *h >= n).await;
    }

    /// In a handler, after its work: holds the answer while armed.
    pub(crate) async fn hold_here(&self) {
        if !self.armed.load(Ordering::SeqCst) {
            return;
        }
        let mut released = self.released.subscribe();
        self.held.send_modify(|n| *n += 1);
        let _ = released.wait_for(|r| *r).await;
    }
}

impl FakeStripe {
    /// From now on, every create that executes charges (or declines) as usual, stores its
    /// answer under its key, and then holds the answer unsent until [`FakeStripe::release_holds`].
    pub fn hold_after_charge(&self) {
        self.state.hold.arm();
    }

    /// New creates are answered at once again; those held so far stay held until
    /// [`FakeStripe::release_holds`].
    pub fn stop_holding(&self) {
        self.state.hold.disarm();
    }

    /// Back to normal mode: held answers are sent, replays answer the stored first outcome.
    pub fn release_holds(&self) {
        self.state.hold.release();
    }

    /// Waits until `n` creates charged and held their answer (the caller bounds the wait).
    pub async fn until_held(&self, n: usize) {
        self.state.hold.until_held(n).await;
    }

    /// Creates held so far.
    pub fn held(&self) -> usize {
        self.state.hold.held()
    }
}
