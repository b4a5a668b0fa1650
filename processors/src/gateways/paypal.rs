//! PayPal Orders v2 with vaulted payment sources (issue 11).
//!
//! - **Auth**: OAuth2 client credentials (`POST /v1/oauth2/token`, HTTP basic with the client
//!   id and secret). The access token is cached until shortly before its `expires_in`; one
//!   refresh runs at a time (the cache sits behind an async mutex), and a 401 on an API call
//!   drops the cached token and retries the call once with a fresh one.
//! - **Charge**: `POST /v2/checkout/orders` with `intent: CAPTURE`, the acceptance's
//!   `invoice_id`, and the saved payment method as the payment source:
//!   `{"paypal": {"vault_id": …}}`, or `{"card": {"vault_id": …}}` when the payment method is
//!   written `card:<vault id>`. It carries `PayPal-Request-Id: <idempotency key>` (a replay
//!   answers the order the first request created, in its latest status) and
//!   `Prefer: return=representation` (the answer carries the captures). With a vaulted source
//!   PayPal captures in the create call.
//! - **Outcome** ([`order_outcome`]): order `COMPLETED` with its capture completed (or since
//!   refunded) is succeeded; a capture `DECLINED`/`FAILED` is declined; a capture `PENDING` is
//!   unknown (reconcile later); `PAYER_ACTION_REQUIRED` (or `APPROVED` but not yet captured)
//!   asks for the payer, with the `payer-action` link; `VOIDED` is declined. Definite client
//!   errors (400, 401 after the retry, 403, 404, 422) are declined with PayPal's issue code
//!   (`INSTRUMENT_DECLINED`, …), except the 422 issue `PAYER_ACTION_REQUIRED`. 408, 409, 425,
//!   429, 5xx, timeouts, resets and bodies that cannot be read are unknown, never declined.
//! - **Payer action**: [`Gateway::complete_action`] reads the order back and captures it when
//!   `APPROVED` (`POST …/capture`, `PayPal-Request-Id: <key>-capture`).
//! - **Refund**: the order's capture is refunded (`POST /v2/payments/captures/{id}/refund`,
//!   `PayPal-Request-Id: <refund key>`).
//! - **Webhooks**: [`PayPal::verify_webhook`] asks PayPal (`verify-webhook-signature`).
//!
//! The client id, secret and tokens are [`SecretString`]s: never in `Debug`, logs or events.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use ocart_domain::Money;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ChargeOutcome, ChargeRequest, Gateway, GatewayState, RefundOutcome, RefundRequest};

/// PayPal's live REST API; anything else (the sandbox, a fake) is `test` mode.
pub const LIVE_API_BASE: &str = "https://api-m.paypal.com";

/// `[gateways.paypal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayPalConfig {
    pub client_id: SecretString,
    pub client_secret: SecretString,
    /// The webhook's id (for `verify-webhook-signature`).
    #[serde(default)]
    pub webhook_id: Option<String>,
    /// `https://api-m.paypal.com` unless set (tests point it at a fake).
    #[serde(default)]
    pub api_base: Option<String>,
    /// Per request, token requests included; 30 unless set.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// A cached access token and when to fetch the next one.
struct Token {
    value: SecretString,
    refresh_at: Instant,
}

/// The PayPal adapter.
pub struct PayPal {
    config: PayPalConfig,
    api_base: String,
    client: reqwest::Client,
    /// The cached token; the lock also makes refreshes one at a time.
    token: tokio::sync::Mutex<Option<Token>>,
}

/// Why an API call has no HTTP answer to map.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallError {
    /// The token endpoint refused the credentials (a definite answer: nothing was called).
    Auth { code: String, message: String },
    /// No readable answer: a timeout, a reset, a 5xx of the token endpoint, a body that is
    /// not JSON. The call may have happened.
    Unknown(String),
}

impl PayPal {
    /// Builds the adapter (no network: the first call fetches a token).
    pub fn from_config(config: &PayPalConfig) -> anyhow::Result<Self> {
        let api_base = config
            .api_base
            .as_deref()
            .unwrap_or(LIVE_API_BASE)
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if !(api_base.starts_with("https://") || api_base.starts_with("http://")) {
            anyhow::bail!("gateways.paypal.api_base must be an http(s) URL, not {api_base:?}");
        }
        if config.client_id.expose_secret().trim().is_empty() {
            anyhow::bail!("gateways.paypal.client_id is empty");
        }
        if config.client_secret.expose_secret().is_empty() {
            anyhow::bail!("gateways.paypal.client_secret is empty");
        }
        let timeout = config.timeout_secs.unwrap_or(30);
        if timeout == 0 {
            anyhow::bail!("gateways.paypal.timeout_secs must be at least 1");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(timeout))
            .user_agent(concat!("OCart/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            config: config.clone(),
            api_base,
            client,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The cached access token, or a fresh one (one fetch at a time).
    async fn token(&self) -> Result<SecretString, CallError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.refresh_at {
                return Ok(token.value.clone());
            }
        }
        let response = self
            .client
            .post(format!("{}/v1/oauth2/token", self.api_base))
            .basic_auth(
                self.config.client_id.expose_secret(),
                Some(self.config.client_secret.expose_secret()),
            )
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| {
                CallError::Unknown(format!("token request failed: {}", e.without_url()))
            })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            CallError::Unknown(format!("token answer unreadable: {}", e.without_url()))
        })?;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            let (Some(access), Some(expires_in)) = (
                body["access_token"].as_str().filter(|t| !t.is_empty()),
                body["expires_in"].as_u64(),
            ) else {
                return Err(CallError::Unknown(
                    "the token answer has no access_token/expires_in".into(),
                ));
            };
            let value = SecretString::from(access.to_owned());
            *cached = Some(Token {
                value: value.clone(),
                refresh_at: Instant::now() + token_lifetime(expires_in),
            });
            return Ok(value);
        }
        if matches!(status, 400 | 401 | 403) {
            return Err(CallError::Auth {
                code: body["error"]
                    .as_str()
                    .unwrap_or("AUTHENTICATION_FAILURE")
                    .to_owned(),
                message: body["error_description"]
                    .as_str()
                    .unwrap_or("PayPal refused the client credentials")
                    .to_owned(),
            });
        }
        Err(CallError::Unknown(format!(
            "the token endpoint answered {status}"
        )))
    }

    /// Forgets `used` if it is still the cached token (a 401 said it is no longer valid).
    async fn drop_token(&self, used: &SecretString) {
        let mut cached = self.token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == used.expose_secret())
        {
            *cached = None;
        }
    }

    /// One API call with a bearer token: a 401 drops the token and retries once. Answers the
    /// status and the JSON body (`Null` for an empty body).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        request_id: Option<&str>,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CallError> {
        let mut retried = false;
        loop {
            let token = self.token().await?;
            let mut request = self
                .client
                .request(method.clone(), format!("{}{path}", self.api_base))
                .bearer_auth(token.expose_secret())
                .header("accept", "application/json")
                .header("prefer", "return=representation");
            if let Some(id) = request_id {
                request = request.header("paypal-request-id", id);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| {
                CallError::Unknown(format!("{method} {path} failed: {}", e.without_url()))
            })?;
            let status = response.status().as_u16();
            if status == 401 && !retried {
                retried = true;
                self.drop_token(&token).await;
                continue;
            }
            let bytes = response.bytes().await.map_err(|e| {
                CallError::Unknown(format!(
                    "{method} {path}: the answer ({status}) was cut off: {}",
                    e.without_url()
                ))
            })?;
            if bytes.iter().all(u8::is_ascii_whitespace) {
                return Ok((status, Value::Null));
            }
            return match serde_json::from_slice(&bytes) {
                Ok(value) => Ok((status, value)),
                Err(_) => Err(CallError::Unknown(format!(
                    "{method} {path}: the answer ({status}) is not JSON"
                ))),
            };
        }
    }

    /// Checks an inbound webhook with PayPal (`POST /v1/notifications/verify-webhook-signature`):
    /// the `PAYPAL-*` transmission headers, the configured webhook id and the event as
    /// delivered. `Ok(false)` when a header is missing, the body is not JSON or PayPal answers
    /// `FAILURE` (or refuses the request as invalid); an error when no webhook id is configured
    /// or PayPal gave no readable answer (the sender retries).
    pub async fn verify_webhook(
        &self,
        headers: &[(String, String)],
        body: &[u8],
    ) -> anyhow::Result<bool> {
        let Some(webhook_id) = self.config.webhook_id.as_deref() else {
            anyhow::bail!(
                "gateways.paypal.webhook_id is not set: PayPal webhooks cannot be verified"
            );
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        };
        let (Some(auth_algo), Some(cert_url), Some(transmission_id), Some(sig), Some(time)) = (
            header("paypal-auth-algo"),
            header("paypal-cert-url"),
            header("paypal-transmission-id"),
            header("paypal-transmission-sig"),
            header("paypal-transmission-time"),
        ) else {
            return Ok(false);
        };
        let Ok(event) = serde_json::from_slice::<Value>(body) else {
            return Ok(false);
        };
        let request = json!({
            "auth_algo": auth_algo,
            "cert_url": cert_url,
            "transmission_id": transmission_id,
            "transmission_sig": sig,
            "transmission_time": time,
            "webhook_id": webhook_id,
            "webhook_event": event,
        });
        let (status, answer) = match self
            .call(
                reqwest::Method::POST,
                "/v1/notifications/verify-webhook-signature",
                None,
                Some(&request),
            )
            .await
        {
            Ok(reply) => reply,
            Err(CallError::Auth { code, message }) => {
                anyhow::bail!("PayPal refused the credentials ({code}): {message}")
            }
            Err(CallError::Unknown(reason)) => anyhow::bail!("{reason}"),
        };
        match status {
            200..=299 => Ok(answer["verification_status"].as_str() == Some("SUCCESS")),
            400 | 422 => Ok(false),
            _ => anyhow::bail!("verify-webhook-signature answered {status}"),
        }
    }

    /// Reads an order: the status and body, or why there is none.
    async fn get_order(&self, order_id: &str) -> Result<(u16, Value), CallError> {
        self.call(
            reqwest::Method::GET,
            &format!("/v2/checkout/orders/{}", path_segment(order_id)),
            None,
            None,
        )
        .await
    }
}

/// How long to use a token that lives `expires_in` seconds: until a minute before it ends
/// (half its life for a short one).
fn token_lifetime(expires_in: u64) -> Duration {
    Duration::from_secs(expires_in.saturating_sub(60).max(expires_in / 2))
}

/// `id` safe to put in a path: PayPal ids are letters and digits; anything else is
/// percent-encoded so it cannot reach another resource.
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// PayPal's `amount` object: the currency's code and the value in its own digits
/// (`1234` USD → `"12.34"`, `500` JPY → `"500"`, `1234` KWD → `"1.234"`).
pub fn amount_json(amount: &Money) -> Value {
    json!({
        "currency_code": amount.currency().as_str(),
        "value": amount.decimal(),
    })
}

/// The `payment_source` of a vaulted payment method: `card:<vault id>` is a saved card,
/// anything else a saved PayPal wallet.
pub fn payment_source(payment_method: &str) -> Value {
    match payment_method.strip_prefix("card:") {
        Some(vault_id) => json!({"card": {"vault_id": vault_id}}),
        None => json!({"paypal": {"vault_id": payment_method}}),
    }
}

/// The create-order body of a charge.
pub fn order_body(request: &ChargeRequest) -> Value {
    // PayPal's limits: custom_id 127 characters, description 127, invoice_id 127.
    let clip = |s: &str| s.chars().take(127).collect::<String>();
    let custom_id = request
        .metadata
        .iter()
        .find(|(k, _)| k == super::ACCEPTANCE_METADATA)
        .map(|(_, v)| v.as_str())
        .unwrap_or(request.idempotency_key.as_str());
    json!({
        "intent": "CAPTURE",
        "purchase_units": [{
            "invoice_id": clip(&request.invoice_id),
            "custom_id": clip(custom_id),
            "description": clip(&request.description),
            "amount": amount_json(&request.amount),
        }],
        "payment_source": payment_source(&request.payment_method),
    })
}

/// The first issue of a PayPal error body (`details[0].issue`, else `name`, else `error`), and
/// its description.
fn issue(body: &Value) -> (Option<String>, String) {
    let detail = &body["details"][0];
    let code = detail["issue"]
        .as_str()
        .or_else(|| body["name"].as_str())
        .or_else(|| body["error"].as_str())
        .map(str::to_owned);
    let message = detail["description"]
        .as_str()
        .or_else(|| body["message"].as_str())
        .or_else(|| body["error_description"].as_str())
        .unwrap_or("PayPal refused the request")
        .to_owned();
    (code, message)
}

/// The `href` of the link whose `rel` is `rel`.
fn link(body: &Value, rel: &str) -> Option<String> {
    body["links"]
        .as_array()?
        .iter()
        .find(|l| l["rel"].as_str() == Some(rel))
        .and_then(|l| l["href"].as_str())
        .map(str::to_owned)
}

/// The order id a payer-action link names (`…?token=<order id>`).
fn token_of(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
}

/// Statuses that may change if asked again: never a decision.
fn transient(status: u16) -> bool {
    matches!(status, 408 | 409 | 425 | 429) || !(200..500).contains(&status)
}

/// Client errors about the `PayPal-Request-Id` itself (a simultaneous request with the same
/// id, an id PayPal thinks it saw): the first request with the key may have charged, so they
/// are no decision either.
fn about_the_request_id(code: &str) -> bool {
    matches!(
        code,
        "DUPLICATE_REQUEST_ID"
            | "PAYPAL_REQUEST_ID_PREVIOUSLY_USED"
            | "PREVIOUS_REQUEST_IN_PROGRESS"
    )
}

/// What an answer about an order (create, read, capture) means. `known_ref` is the order id
/// when the caller already has it (read, capture). Pure: the table tests below pin it.
pub fn order_outcome(status: u16, body: &Value, known_ref: Option<&str>) -> ChargeOutcome {
    let named_ref = body["id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .or_else(|| known_ref.map(str::to_owned));
    if transient(status) || (300..400).contains(&status) {
        return ChargeOutcome::Unknown {
            charge_ref: named_ref,
            reason: format!("PayPal answered {status}"),
        };
    }
    if (400..500).contains(&status) {
        let (code, message) = issue(body);
        let code = code.unwrap_or_else(|| format!("HTTP_{status}"));
        // An error body's `id` is not an order's: only the caller's reference counts.
        let charge_ref = known_ref.map(str::to_owned);
        if about_the_request_id(&code) {
            return ChargeOutcome::Unknown {
                charge_ref,
                reason: format!("PayPal answered {status} {code}: {message}"),
            };
        }
        if code == "PAYER_ACTION_REQUIRED" {
            let action_url = link(body, "payer-action");
            return match charge_ref.or_else(|| action_url.as_deref().and_then(token_of)) {
                Some(charge_ref) => ChargeOutcome::RequiresAction {
                    charge_ref,
                    action_url,
                    client_secret: None,
                },
                None => ChargeOutcome::Unknown {
                    charge_ref: None,
                    reason: "PayPal asked for a payer action but named no order".into(),
                },
            };
        }
        return ChargeOutcome::Declined {
            charge_ref,
            code,
            message,
        };
    }
    // 2xx: an order.
    let Some(charge_ref) = named_ref else {
        return ChargeOutcome::Unknown {
            charge_ref: None,
            reason: format!("PayPal answered {status} without an order id"),
        };
    };
    let capture = &body["purchase_units"][0]["payments"]["captures"][0];
    match body["status"].as_str().unwrap_or_default() {
        "COMPLETED" => match capture["status"].as_str().unwrap_or_default() {
            "COMPLETED" | "PARTIALLY_REFUNDED" | "REFUNDED" => {
                ChargeOutcome::Succeeded { charge_ref }
            }
            "DECLINED" | "FAILED" => {
                let code = capture["status"].as_str().unwrap_or("DECLINED").to_owned();
                let message = capture["status_details"]["reason"]
                    .as_str()
                    .map(|r| format!("the capture was {} ({r})", code.to_lowercase()))
                    .unwrap_or_else(|| format!("the capture was {}", code.to_lowercase()));
                ChargeOutcome::Declined {
                    charge_ref: Some(charge_ref),
                    code,
                    message,
                }
            }
            "PENDING" => ChargeOutcome::Unknown {
                charge_ref: Some(charge_ref),
                reason: format!(
                    "the capture is pending ({})",
                    capture["status_details"]["reason"]
                        .as_str()
                        .unwrap_or("no reason given")
                ),
            },
            other => ChargeOutcome::Unknown {
                charge_ref: Some(charge_ref),
                reason: format!("the order is completed but its capture is {other:?}"),
            },
        },
        "PAYER_ACTION_REQUIRED" | "APPROVED" => ChargeOutcome::RequiresAction {
            action_url: link(body, "payer-action"),
            charge_ref,
            client_secret: None,
        },
        "VOIDED" => ChargeOutcome::Declined {
            charge_ref: Some(charge_ref),
            code: "VOIDED".into(),
            message: "the order was voided".into(),
        },
        other => ChargeOutcome::Unknown {
            charge_ref: Some(charge_ref),
            reason: format!("the order is {other:?}"),
        },
    }
}

/// What an answer to a refund means. Pure.
pub fn refund_outcome(status: u16, body: &Value) -> RefundOutcome {
    if transient(status) || (300..400).contains(&status) {
        return RefundOutcome::Unknown {
            reason: format!("PayPal answered {status}"),
        };
    }
    if (400..500).contains(&status) {
        let (code, message) = issue(body);
        let code = code.unwrap_or_else(|| format!("HTTP_{status}"));
        if about_the_request_id(&code) {
            return RefundOutcome::Unknown {
                reason: format!("PayPal answered {status} {code}: {message}"),
            };
        }
        return RefundOutcome::Failed { code, message };
    }
    let id = body["id"].as_str().filter(|id| !id.is_empty());
    match (body["status"].as_str().unwrap_or_default(), id) {
        ("COMPLETED" | "PENDING", Some(id)) => RefundOutcome::Refunded {
            refund_ref: id.to_owned(),
        },
        (s @ ("CANCELLED" | "FAILED"), _) => RefundOutcome::Failed {
            code: s.to_owned(),
            message: format!("the refund was {}", s.to_lowercase()),
        },
        (other, _) => RefundOutcome::Unknown {
            reason: format!("the refund is {other:?}"),
        },
    }
}

/// A [`CallError`] as a charge outcome: refused credentials are definite (nothing was
/// charged), everything else unknown.
fn call_error_outcome(error: CallError, charge_ref: Option<&str>) -> ChargeOutcome {
    match error {
        CallError::Auth { code, message } => ChargeOutcome::Declined {
            charge_ref: charge_ref.map(str::to_owned),
            code,
            message,
        },
        CallError::Unknown(reason) => ChargeOutcome::Unknown {
            charge_ref: charge_ref.map(str::to_owned),
            reason,
        },
    }
}

#[async_trait]
impl Gateway for PayPal {
    fn id(&self) -> &'static str {
        "paypal"
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let body = order_body(request);
        match self
            .call(
                reqwest::Method::POST,
                "/v2/checkout/orders",
                Some(&request.idempotency_key),
                Some(&body),
            )
            .await
        {
            Ok((status, answer)) => order_outcome(status, &answer, None),
            Err(error) => call_error_outcome(error, None),
        }
    }

    async fn retrieve(&self, charge_ref: &str) -> ChargeOutcome {
        match self.get_order(charge_ref).await {
            Ok((status, answer)) => order_outcome(status, &answer, Some(charge_ref)),
            Err(error) => call_error_outcome(error, Some(charge_ref)),
        }
    }

    async fn complete_action(&self, charge_ref: &str, idempotency_key: &str) -> ChargeOutcome {
        let (status, order) = match self.get_order(charge_ref).await {
            Ok(reply) => reply,
            Err(error) => return call_error_outcome(error, Some(charge_ref)),
        };
        if !((200..300).contains(&status) && order["status"].as_str() == Some("APPROVED")) {
            return order_outcome(status, &order, Some(charge_ref));
        }
        let captured = self
            .call(
                reqwest::Method::POST,
                &format!("/v2/checkout/orders/{}/capture", path_segment(charge_ref)),
                Some(&format!("{idempotency_key}-capture")),
                Some(&json!({})),
            )
            .await;
        match captured {
            Ok((422, answer)) if issue(&answer).0.as_deref() == Some("ORDER_ALREADY_CAPTURED") => {
                // Captured by an earlier attempt: what the order says now is the answer.
                self.retrieve(charge_ref).await
            }
            Ok((status, answer)) => order_outcome(status, &answer, Some(charge_ref)),
            Err(error) => call_error_outcome(error, Some(charge_ref)),
        }
    }

    async fn refund(&self, request: &RefundRequest) -> RefundOutcome {
        let order = match self.get_order(&request.charge_ref).await {
            Ok((status, order)) if (200..300).contains(&status) => order,
            Ok((status, body)) => return refund_outcome(status, &body),
            Err(CallError::Auth { code, message }) => {
                return RefundOutcome::Failed { code, message }
            }
            Err(CallError::Unknown(reason)) => return RefundOutcome::Unknown { reason },
        };
        let Some(capture_id) = order["purchase_units"][0]["payments"]["captures"][0]["id"]
            .as_str()
            .filter(|id| !id.is_empty())
        else {
            return RefundOutcome::Failed {
                code: "NO_CAPTURE".into(),
                message: format!("the order {} has no capture to refund", request.charge_ref),
            };
        };
        let mut body = json!({"amount": amount_json(&request.amount)});
        if let Some(reason) = &request.reason {
            body["note_to_payer"] = json!(reason.chars().take(255).collect::<String>());
        }
        match self
            .call(
                reqwest::Method::POST,
                &format!("/v2/payments/captures/{}/refund", path_segment(capture_id)),
                Some(&request.idempotency_key),
                Some(&body),
            )
            .await
        {
            Ok((status, answer)) => refund_outcome(status, &answer),
            Err(CallError::Auth { code, message }) => RefundOutcome::Failed { code, message },
            Err(CallError::Unknown(reason)) => RefundOutcome::Unknown { reason },
        }
    }

    /// The order's capture id: what WooCommerce's PayPal plugins record as the transaction
    /// (and refund by), never the order id.
    async fn transaction_id(&self, charge_ref: &str) -> anyhow::Result<String> {
        match self.get_order(charge_ref).await {
            Ok((status, order)) if (200..300).contains(&status) => order["purchase_units"][0]
                ["payments"]["captures"][0]["id"]
                .as_str()
                .filter(|id| !id.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("the PayPal order {charge_ref} has no capture")),
            Ok((status, _)) => {
                anyhow::bail!("PayPal answered {status} to reading the order {charge_ref}")
            }
            Err(CallError::Auth { code, message }) => {
                anyhow::bail!("PayPal refused the credentials ({code}): {message}")
            }
            Err(CallError::Unknown(reason)) => {
                anyhow::bail!("the PayPal order {charge_ref} could not be read: {reason}")
            }
        }
    }

    fn state(&self) -> GatewayState {
        GatewayState {
            id: "paypal",
            mode: if self.api_base == LIVE_API_BASE {
                "live"
            } else {
                "test"
            },
            api_base: self.api_base.clone(),
            webhooks: self.config.webhook_id.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocart_domain::Currency;

    fn money(minor: i64, currency: &str) -> Money {
        Money::new(minor, Currency::parse("currency", currency).unwrap()).unwrap()
    }

    fn order(status: &str, capture: Option<&str>) -> Value {
        let mut order = json!({
            "id": "5O190127TN364715T",
            "status": status,
            "links": [
                {"href": "https://api-m.paypal.com/v2/checkout/orders/5O190127TN364715T", "rel": "self", "method": "GET"},
                {"href": "https://www.paypal.com/checkoutnow?token=5O190127TN364715T", "rel": "payer-action", "method": "GET"}
            ],
        });
        if let Some(capture) = capture {
            order["purchase_units"] = json!([{"payments": {"captures": [{"id": "3C679366HH908993F", "status": capture}]}}]);
        }
        order
    }

    fn error(name: &str, issue: &str) -> Value {
        json!({"name": name, "details": [{"issue": issue, "description": "why"}], "debug_id": "b1d1f06c7246c"})
    }

    #[test]
    fn amounts_are_written_in_the_currencys_own_digits() {
        for (minor, currency, value) in [
            (1234, "USD", "12.34"),
            (5, "USD", "0.05"),
            (100, "EUR", "1.00"),
            (0, "USD", "0.00"),
            (500, "JPY", "500"),
            (1234, "KWD", "1.234"),
            (100_000_000_000, "USD", "1000000000.00"),
        ] {
            assert_eq!(
                amount_json(&money(minor, currency)),
                json!({"currency_code": currency, "value": value}),
                "{minor} {currency}"
            );
        }
    }

    #[test]
    fn a_card_prefix_names_a_saved_card_anything_else_a_wallet() {
        assert_eq!(
            payment_source("card:7xy"),
            json!({"card": {"vault_id": "7xy"}})
        );
        assert_eq!(
            payment_source("8kk"),
            json!({"paypal": {"vault_id": "8kk"}})
        );
    }

    #[test]
    fn order_answers_map_to_outcomes() {
        let id = "5O190127TN364715T";
        let succeeded = ChargeOutcome::Succeeded {
            charge_ref: id.into(),
        };
        let action = ChargeOutcome::RequiresAction {
            charge_ref: id.into(),
            action_url: Some(format!("https://www.paypal.com/checkoutnow?token={id}")),
            client_secret: None,
        };
        let declined =
            |code: &str, charge_ref: Option<&str>| (code.to_owned(), charge_ref.map(str::to_owned));
        enum Want {
            Is(ChargeOutcome),
            Declined(String, Option<String>),
            Unknown,
        }
        let cases: Vec<(&str, u16, Value, Option<&str>, Want)> = vec![
            (
                "completed",
                201,
                order("COMPLETED", Some("COMPLETED")),
                None,
                Want::Is(succeeded.clone()),
            ),
            (
                "replayed",
                200,
                order("COMPLETED", Some("COMPLETED")),
                None,
                Want::Is(succeeded.clone()),
            ),
            (
                "refunded since",
                200,
                order("COMPLETED", Some("PARTIALLY_REFUNDED")),
                None,
                Want::Is(succeeded.clone()),
            ),
            (
                "capture declined",
                201,
                order("COMPLETED", Some("DECLINED")),
                None,
                {
                    let (c, r) = declined("DECLINED", Some(id));
                    Want::Declined(c, r)
                },
            ),
            (
                "capture failed",
                201,
                order("COMPLETED", Some("FAILED")),
                None,
                {
                    let (c, r) = declined("FAILED", Some(id));
                    Want::Declined(c, r)
                },
            ),
            (
                "capture pending",
                201,
                order("COMPLETED", Some("PENDING")),
                None,
                Want::Unknown,
            ),
            (
                "completed, no capture",
                201,
                order("COMPLETED", None),
                None,
                Want::Unknown,
            ),
            (
                "payer action",
                201,
                order("PAYER_ACTION_REQUIRED", None),
                None,
                Want::Is(action.clone()),
            ),
            (
                "approved",
                200,
                order("APPROVED", None),
                Some(id),
                Want::Is(action.clone()),
            ),
            ("created", 201, order("CREATED", None), None, Want::Unknown),
            ("voided", 200, order("VOIDED", None), Some(id), {
                let (c, r) = declined("VOIDED", Some(id));
                Want::Declined(c, r)
            }),
            (
                "no id",
                201,
                json!({"status": "COMPLETED"}),
                None,
                Want::Unknown,
            ),
            (
                "instrument declined",
                422,
                error("UNPROCESSABLE_ENTITY", "INSTRUMENT_DECLINED"),
                None,
                {
                    let (c, r) = declined("INSTRUMENT_DECLINED", None);
                    Want::Declined(c, r)
                },
            ),
            (
                "422 payer action with a link",
                422,
                {
                    let mut e = error("UNPROCESSABLE_ENTITY", "PAYER_ACTION_REQUIRED");
                    e["links"] = order("X", None)["links"].clone();
                    e
                },
                None,
                Want::Is(action.clone()),
            ),
            (
                "422 payer action on capture",
                422,
                error("UNPROCESSABLE_ENTITY", "PAYER_ACTION_REQUIRED"),
                Some(id),
                Want::Is(ChargeOutcome::RequiresAction {
                    charge_ref: id.into(),
                    action_url: None,
                    client_secret: None,
                }),
            ),
            (
                "422 payer action, no order",
                422,
                error("UNPROCESSABLE_ENTITY", "PAYER_ACTION_REQUIRED"),
                None,
                Want::Unknown,
            ),
            (
                "invalid request",
                400,
                error("INVALID_REQUEST", "MISSING_REQUIRED_PARAMETER"),
                None,
                {
                    let (c, r) = declined("MISSING_REQUIRED_PARAMETER", None);
                    Want::Declined(c, r)
                },
            ),
            (
                "unauthorised after the retry",
                401,
                json!({"error": "invalid_token", "error_description": "Token signature verification failed"}),
                None,
                {
                    let (c, r) = declined("invalid_token", None);
                    Want::Declined(c, r)
                },
            ),
            ("forbidden", 403, json!({"name": "NOT_AUTHORIZED"}), None, {
                let (c, r) = declined("NOT_AUTHORIZED", None);
                Want::Declined(c, r)
            }),
            (
                "not found",
                404,
                error("RESOURCE_NOT_FOUND", "INVALID_RESOURCE_ID"),
                Some(id),
                {
                    let (c, r) = declined("INVALID_RESOURCE_ID", Some(id));
                    Want::Declined(c, r)
                },
            ),
            ("4xx without a body", 405, Value::Null, None, {
                let (c, r) = declined("HTTP_405", None);
                Want::Declined(c, r)
            }),
            (
                "bare conflict",
                409,
                json!({"name": "RESOURCE_CONFLICT"}),
                None,
                Want::Unknown,
            ),
            (
                "conflict",
                409,
                error("RESOURCE_CONFLICT", "PREVIOUS_REQUEST_IN_PROGRESS"),
                None,
                Want::Unknown,
            ),
            (
                "request id reused",
                422,
                error("UNPROCESSABLE_ENTITY", "PAYPAL_REQUEST_ID_PREVIOUSLY_USED"),
                None,
                Want::Unknown,
            ),
            (
                "duplicate request id",
                422,
                error("UNPROCESSABLE_ENTITY", "DUPLICATE_REQUEST_ID"),
                None,
                Want::Unknown,
            ),
            ("request timeout", 408, Value::Null, None, Want::Unknown),
            (
                "rate limited",
                429,
                error("RATE_LIMIT_REACHED", "RATE_LIMIT_REACHED"),
                None,
                Want::Unknown,
            ),
            (
                "internal error",
                500,
                error("INTERNAL_SERVER_ERROR", "INTERNAL_SERVICE_ERROR"),
                None,
                Want::Unknown,
            ),
            ("unavailable", 503, Value::Null, None, Want::Unknown),
            ("redirect", 302, Value::Null, None, Want::Unknown),
        ];
        for (name, status, body, known, want) in cases {
            let got = order_outcome(status, &body, known);
            match want {
                Want::Is(want) => assert_eq!(got, want, "{name}"),
                Want::Declined(code, charge_ref) => assert!(
                    matches!(&got, ChargeOutcome::Declined { code: c, charge_ref: r, .. } if *c == code && *r == charge_ref),
                    "{name}: {got:?}"
                ),
                Want::Unknown => assert!(
                    matches!(got, ChargeOutcome::Unknown { .. }),
                    "{name}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn refund_answers_map_to_outcomes() {
        let refunded = RefundOutcome::Refunded {
            refund_ref: "1JU08902781691411".into(),
        };
        for (name, status, body, want) in [
            (
                "completed",
                201,
                json!({"id": "1JU08902781691411", "status": "COMPLETED"}),
                Some(refunded.clone()),
            ),
            (
                "pending",
                201,
                json!({"id": "1JU08902781691411", "status": "PENDING"}),
                Some(refunded.clone()),
            ),
            (
                "replayed",
                200,
                json!({"id": "1JU08902781691411", "status": "COMPLETED"}),
                Some(refunded.clone()),
            ),
            (
                "failed",
                201,
                json!({"id": "1JU08902781691411", "status": "FAILED"}),
                Some(RefundOutcome::Failed {
                    code: "FAILED".into(),
                    message: "the refund was failed".into(),
                }),
            ),
            (
                "too much",
                422,
                error("UNPROCESSABLE_ENTITY", "REFUND_AMOUNT_EXCEEDED"),
                Some(RefundOutcome::Failed {
                    code: "REFUND_AMOUNT_EXCEEDED".into(),
                    message: "why".into(),
                }),
            ),
            ("no id", 201, json!({"status": "COMPLETED"}), None),
            ("conflict", 409, Value::Null, None),
            (
                "duplicate request id",
                422,
                error("UNPROCESSABLE_ENTITY", "DUPLICATE_REQUEST_ID"),
                None,
            ),
            ("rate limited", 429, Value::Null, None),
            ("internal error", 500, Value::Null, None),
        ] {
            let got = refund_outcome(status, &body);
            match want {
                Some(want) => assert_eq!(got, want, "{name}"),
                None => assert!(
                    matches!(got, RefundOutcome::Unknown { .. }),
                    "{name}: {got:?}"
                ),
            }
        }
    }

    #[test]
    fn the_create_body_carries_the_invoice_the_amount_and_the_vaulted_source() {
        let request = ChargeRequest {
            idempotency_key: "acc-1".into(),
            amount: money(1999, "USD"),
            customer: None,
            payment_method: "card:vlt_9".into(),
            description: "Upsell".into(),
            invoice_id: "inv-1".into(),
            return_url: None,
            metadata: vec![(crate::gateways::ACCEPTANCE_METADATA.into(), "acc-1".into())],
        };
        assert_eq!(
            order_body(&request),
            json!({
                "intent": "CAPTURE",
                "purchase_units": [{
                    "invoice_id": "inv-1",
                    "custom_id": "acc-1",
                    "description": "Upsell",
                    "amount": {"currency_code": "USD", "value": "19.99"},
                }],
                "payment_source": {"card": {"vault_id": "vlt_9"}},
            })
        );
    }

    #[test]
    fn paths_cannot_be_steered_and_tokens_live_until_shortly_before_they_expire() {
        assert_eq!(path_segment("5O190127TN364715T"), "5O190127TN364715T");
        assert_eq!(path_segment("../v1/x?y"), "%2E%2E%2Fv1%2Fx%3Fy");
        assert_eq!(token_lifetime(32400), Duration::from_secs(32340));
        assert_eq!(token_lifetime(30), Duration::from_secs(15));
        assert_eq!(token_lifetime(0), Duration::ZERO);
    }

    #[test]
    fn state_names_the_mode_and_debug_shows_no_secret() {
        let config: PayPalConfig = serde_json::from_value(json!({
            "client_id": "id-123", "client_secret": "shh-secret"
        }))
        .unwrap();
        let live = PayPal::from_config(&config).unwrap();
        assert_eq!(live.state().mode, "live");
        assert!(!live.state().webhooks);
        let test: PayPalConfig = serde_json::from_value(json!({
            "client_id": "id-123", "client_secret": "shh-secret",
            "api_base": "https://api-m.sandbox.paypal.com/", "webhook_id": "WH-1"
        }))
        .unwrap();
        let sandbox = PayPal::from_config(&test).unwrap();
        assert_eq!(sandbox.state().mode, "test");
        assert_eq!(sandbox.state().api_base, "https://api-m.sandbox.paypal.com");
        assert!(sandbox.state().webhooks);
        assert!(!format!("{test:?}").contains("shh-secret"));
        assert!(!format!("{:?}", sandbox.state()).contains("shh-secret"));
        let bad: PayPalConfig = serde_json::from_value(json!({
            "client_id": "id", "client_secret": "s", "api_base": "ftp://x"
        }))
        .unwrap();
        assert!(PayPal::from_config(&bad).is_err());
    }
}
