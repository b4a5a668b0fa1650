//! Stripe PaymentIntents (issue 11), speaking Stripe's documented v1 protocol:
//!
//! - `charge`: `POST /v1/payment_intents` with `confirm=true`, form-encoded
//!   (`metadata[acceptance_id]=…`), `Authorization: Bearer sk_…` and the charge's
//!   `Idempotency-Key`. A customer-initiated charge (the shopper is present and clicked accept;
//!   no `off_session`), so 3DS answers `requires_action` and is handled on-session.
//! - `retrieve` / `complete_action`: `GET /v1/payment_intents/{id}` (never the browser's word).
//! - `refund`: `POST /v1/refunds` with `payment_intent`, `amount` and the refund's key.
//!
//! How answers map (the pure functions at the bottom, table-tested):
//!
//! | Stripe answered                                            | outcome                      |
//! |------------------------------------------------------------|------------------------------|
//! | 2xx, `status: succeeded`                                   | `Succeeded`                  |
//! | 2xx, `status: requires_action`                             | `RequiresAction` (redirect url, client secret) |
//! | 2xx, `status: requires_payment_method` / `canceled`        | `Declined` (`last_payment_error`'s `decline_code` or `code`) |
//! | 2xx, `processing` or any other status                      | `Unknown` with the intent id (read back later) |
//! | 402 (`card_error`)                                         | `Declined` (`decline_code` or `code`, `error.payment_intent.id`) |
//! | 400 (not `idempotency_error`), 401, 403, 404               | `Declined`: nothing was charged |
//! | 400 `idempotency_error`, 409, 429, other 4xx, 3xx, 5xx     | `Unknown`                    |
//! | timeout, connection error or reset, a body that does not parse | `Unknown`                |
//!
//! A read-back (`retrieve`) maps every non-2xx answer to `Unknown`: a refused or failed read
//! proves nothing about the charge it names.
//!
//! The secret key is a [`SecretString`]: never in `Debug`, in a reason or message, or in
//! [`GatewayState`].

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::{ChargeOutcome, ChargeRequest, Gateway, GatewayState, RefundOutcome, RefundRequest};

/// Where Stripe's API lives unless `api_base` says otherwise.
pub const API_BASE: &str = "https://api.stripe.com";
/// The API version every request pins (`Stripe-Version`), so an account upgrade cannot change
/// the shapes this adapter reads.
pub const STRIPE_VERSION: &str = "2024-06-20";
/// The request timeout unless `timeout_secs` says otherwise.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The refund reasons Stripe accepts; any other is sent as `requested_by_customer`.
pub const REFUND_REASONS: [&str; 3] = ["duplicate", "fraudulent", "requested_by_customer"];

/// `[gateways.stripe]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// `sk_live_…` or `sk_test_…` (or a restricted `rk_…` key).
    pub secret_key: SecretString,
    /// Webhook signing secrets (`whsec_…`); more than one while a secret rolls.
    #[serde(default)]
    pub webhook_secrets: Vec<SecretString>,
    /// `https://api.stripe.com` unless set (tests point it at a fake).
    #[serde(default)]
    pub api_base: Option<String>,
    /// Seconds before a request is abandoned (its outcome is then unknown); 30 unless set.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The Stripe adapter: one HTTP client, the key, the base URL.
pub struct Stripe {
    secret_key: SecretString,
    api_base: String,
    mode: &'static str,
    webhooks: bool,
    client: reqwest::Client,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe")
            .field("secret_key", &"[REDACTED]")
            .field("api_base", &self.api_base)
            .field("mode", &self.mode)
            .field("webhooks", &self.webhooks)
            .finish()
    }
}

impl Stripe {
    /// Builds the adapter, refusing a key that cannot be a Stripe secret key, an `api_base`
    /// that is not an http(s) URL without credentials, and a zero timeout (each error names
    /// the field).
    pub fn from_config(config: &StripeConfig) -> anyhow::Result<Self> {
        let key = config.secret_key.expose_secret();
        if !(key.starts_with("sk_") || key.starts_with("rk_"))
            || key.len() < 8
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            anyhow::bail!(
                "gateways.stripe.secret_key: expected a Stripe secret key (sk_live_…, sk_test_… or rk_…)"
            );
        }
        let raw_base = config.api_base.as_deref().unwrap_or(API_BASE);
        let base = reqwest::Url::parse(raw_base).map_err(|e| {
            anyhow::anyhow!("gateways.stripe.api_base: {raw_base:?} is not a URL: {e}")
        })?;
        if !matches!(base.scheme(), "http" | "https")
            || base.host_str().is_none()
            || !base.username().is_empty()
            || base.password().is_some()
            || base.query().is_some()
            || base.fragment().is_some()
        {
            anyhow::bail!(
                "gateways.stripe.api_base: {raw_base:?} must be an http(s) URL with a host and no credentials, query or fragment"
            );
        }
        let timeout = config.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout == 0 {
            anyhow::bail!("gateways.stripe.timeout_secs: must be at least 1");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(timeout))
            .user_agent(concat!("OCart/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| anyhow::anyhow!("gateways.stripe: cannot build the HTTP client: {e}"))?;
        let mode = if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            "live"
        } else {
            "test"
        };
        Ok(Self {
            secret_key: config.secret_key.clone(),
            api_base: base.as_str().trim_end_matches('/').to_owned(),
            mode,
            webhooks: !config.webhook_secrets.is_empty(),
            client,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.api_base))
            .bearer_auth(self.secret_key.expose_secret())
            .header("Stripe-Version", STRIPE_VERSION)
    }

    /// Sends `builder` and reads the whole answer: `(status, body)`, or why there is none.
    async fn send(&self, builder: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), String> {
        let response = builder.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            format!(
                "HTTP {status}, but the body was cut off: {}",
                self.transport(&e)
            )
        })?;
        Ok((status, body.to_vec()))
    }

    fn transport(&self, error: &reqwest::Error) -> String {
        let what = if error.is_timeout() {
            "Stripe did not answer in time"
        } else if error.is_connect() {
            "could not connect to Stripe"
        } else {
            "the connection to Stripe failed before an answer"
        };
        // reqwest's message names the URL (no credential in it) and the cause.
        redact(
            &format!("{what}: {}", error_chain(error)),
            self.secret_key.expose_secret(),
        )
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Gateway for Stripe {
    fn id(&self) -> &'static str {
        "stripe"
    }

    async fn charge(&self, request: &ChargeRequest) -> ChargeOutcome {
        let builder = self
            .request(reqwest::Method::POST, "/v1/payment_intents")
            .header("Idempotency-Key", &request.idempotency_key)
            .form(&charge_form(request));
        match self.send(builder).await {
            Ok((status, body)) => redact_outcome(
                charge_answer(status, &body),
                self.secret_key.expose_secret(),
            ),
            Err(reason) => ChargeOutcome::Unknown {
                charge_ref: None,
                reason,
            },
        }
    }

    async fn retrieve(&self, charge_ref: &str) -> ChargeOutcome {
        let path = format!("/v1/payment_intents/{}", encode_path_segment(charge_ref));
        match self.send(self.request(reqwest::Method::GET, &path)).await {
            Ok((status, body)) => redact_outcome(
                retrieve_answer(charge_ref, status, &body),
                self.secret_key.expose_secret(),
            ),
            Err(reason) => ChargeOutcome::Unknown {
                charge_ref: Some(charge_ref.to_owned()),
                reason,
            },
        }
    }

    async fn complete_action(&self, charge_ref: &str, _idempotency_key: &str) -> ChargeOutcome {
        // Stripe confirms the intent itself once the shopper finishes 3DS: read it back.
        self.retrieve(charge_ref).await
    }

    async fn refund(&self, request: &RefundRequest) -> RefundOutcome {
        let builder = self
            .request(reqwest::Method::POST, "/v1/refunds")
            .header("Idempotency-Key", &request.idempotency_key)
            .form(&refund_form(request));
        let key = self.secret_key.expose_secret();
        match self.send(builder).await {
            Ok((status, body)) => match refund_answer(status, &body) {
                RefundOutcome::Failed { code, message } => RefundOutcome::Failed {
                    code,
                    message: redact(&message, key),
                },
                RefundOutcome::Unknown { reason } => RefundOutcome::Unknown {
                    reason: redact(&reason, key),
                },
                refunded => refunded,
            },
            Err(reason) => RefundOutcome::Unknown { reason },
        }
    }

    fn state(&self) -> GatewayState {
        GatewayState {
            id: "stripe",
            mode: self.mode,
            api_base: self.api_base.clone(),
            webhooks: self.webhooks,
        }
    }
}

/// The form of a charge: Stripe's parameters, nested keys in brackets.
fn charge_form(request: &ChargeRequest) -> Vec<(String, String)> {
    let mut form = vec![
        ("amount".to_owned(), request.amount.minor().to_string()),
        (
            "currency".to_owned(),
            request.amount.currency().as_str().to_ascii_lowercase(),
        ),
        ("payment_method".to_owned(), request.payment_method.clone()),
        ("confirm".to_owned(), "true".to_owned()),
        ("payment_method_types[]".to_owned(), "card".to_owned()),
        ("description".to_owned(), request.description.clone()),
    ];
    if let Some(customer) = &request.customer {
        form.push(("customer".to_owned(), customer.clone()));
    }
    if let Some(url) = &request.return_url {
        form.push(("return_url".to_owned(), url.clone()));
    }
    for (key, value) in &request.metadata {
        if key == "invoice_id" {
            continue;
        }
        form.push((
            format!("metadata[{}]", metadata_key(key)),
            metadata_value(value),
        ));
    }
    form.push((
        "metadata[invoice_id]".to_owned(),
        metadata_value(&request.invoice_id),
    ));
    form
}

/// Stripe's metadata keys: at most 40 characters, no square brackets.
fn metadata_key(key: &str) -> String {
    key.chars()
        .map(|c| if c == '[' || c == ']' { '_' } else { c })
        .take(40)
        .collect()
}

/// Stripe's metadata values: at most 500 characters.
fn metadata_value(value: &str) -> String {
    value.chars().take(500).collect()
}

fn refund_form(request: &RefundRequest) -> Vec<(String, String)> {
    let mut form = vec![
        ("payment_intent".to_owned(), request.charge_ref.clone()),
        ("amount".to_owned(), request.amount.minor().to_string()),
    ];
    if let Some(reason) = refund_reason(request.reason.as_deref()) {
        form.push(("reason".to_owned(), reason.to_owned()));
    }
    form
}

/// The `reason` Stripe accepts for OCart's: its own three as they are, any other reason as
/// `requested_by_customer`, none as none.
fn refund_reason(reason: Option<&str>) -> Option<&'static str> {
    let reason = reason?.trim();
    if reason.is_empty() {
        return None;
    }
    Some(
        REFUND_REASONS
            .iter()
            .find(|r| r.eq_ignore_ascii_case(reason))
            .copied()
            .unwrap_or("requested_by_customer"),
    )
}

/// An id as one path segment: unreserved characters as they are, the rest percent-encoded.
fn encode_path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `text` with every occurrence of the key replaced.
fn redact(text: &str, key: &str) -> String {
    if key.is_empty() {
        text.to_owned()
    } else {
        text.replace(key, "[REDACTED]")
    }
}

fn redact_outcome(outcome: ChargeOutcome, key: &str) -> ChargeOutcome {
    match outcome {
        ChargeOutcome::Declined {
            charge_ref,
            code,
            message,
        } => ChargeOutcome::Declined {
            charge_ref,
            code,
            message: redact(&message, key),
        },
        ChargeOutcome::Unknown { charge_ref, reason } => ChargeOutcome::Unknown {
            charge_ref,
            reason: redact(&reason, key),
        },
        other => other,
    }
}

/// Stripe's error object (`{"error": {…}}`), the parts this adapter reads.
#[derive(Debug, Default)]
struct StripeError {
    kind: Option<String>,
    code: Option<String>,
    decline_code: Option<String>,
    message: Option<String>,
    payment_intent: Option<String>,
}

fn parse_error(body: &[u8]) -> Option<StripeError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?.as_object()?;
    let text = |name: &str| {
        error
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Some(StripeError {
        kind: text("type"),
        code: text("code"),
        decline_code: text("decline_code"),
        message: text("message"),
        payment_intent: error
            .get("payment_intent")
            .and_then(|pi| pi.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn describe(status: u16, error: &StripeError) -> String {
    let mut text = format!("Stripe answered HTTP {status}");
    if let Some(kind) = &error.kind {
        text.push_str(&format!(" ({kind}"));
        if let Some(code) = &error.code {
            text.push_str(&format!(", {code}"));
        }
        text.push(')');
    }
    if let Some(message) = &error.message {
        text.push_str(": ");
        text.push_str(message);
    }
    text
}

/// A PaymentIntent object as an outcome.
fn intent_outcome(intent: &Value) -> ChargeOutcome {
    let Some(id) = intent
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    else {
        return ChargeOutcome::Unknown {
            charge_ref: None,
            reason: "Stripe answered without a PaymentIntent id".into(),
        };
    };
    let charge_ref = id.to_owned();
    let status = intent.get("status").and_then(Value::as_str).unwrap_or("");
    match status {
        "succeeded" => ChargeOutcome::Succeeded { charge_ref },
        "requires_action" => ChargeOutcome::RequiresAction {
            action_url: intent
                .pointer("/next_action/redirect_to_url/url")
                .and_then(Value::as_str)
                .map(str::to_owned),
            client_secret: intent
                .get("client_secret")
                .and_then(Value::as_str)
                .map(str::to_owned),
            charge_ref,
        },
        "requires_payment_method" | "canceled" => {
            let error = intent.get("last_payment_error");
            let text = |name: &str| {
                error
                    .and_then(|e| e.get(name))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            };
            let code = text("decline_code")
                .or_else(|| text("code"))
                .or_else(|| {
                    intent
                        .get("cancellation_reason")
                        .and_then(Value::as_str)
                        .map(|r| format!("canceled_{r}"))
                })
                .unwrap_or_else(|| status.to_owned());
            let message = text("message").unwrap_or_else(|| {
                if status == "canceled" {
                    "The payment was canceled.".to_owned()
                } else {
                    "The payment method was not charged.".to_owned()
                }
            });
            ChargeOutcome::Declined {
                charge_ref: Some(charge_ref),
                code,
                message,
            }
        }
        "processing" => ChargeOutcome::Unknown {
            charge_ref: Some(charge_ref),
            reason: "the PaymentIntent is processing; read it back later".into(),
        },
        other => ChargeOutcome::Unknown {
            charge_ref: Some(charge_ref),
            reason: format!("the PaymentIntent is in status {other:?}"),
        },
    }
}

fn intent_body(status: u16, body: &[u8]) -> ChargeOutcome {
    match serde_json::from_slice::<Value>(body) {
        Ok(intent) if intent.is_object() => intent_outcome(&intent),
        _ => ChargeOutcome::Unknown {
            charge_ref: None,
            reason: format!(
                "Stripe answered HTTP {status} with a body that is not a PaymentIntent"
            ),
        },
    }
}

/// The answer to `POST /v1/payment_intents` as an outcome.
fn charge_answer(status: u16, body: &[u8]) -> ChargeOutcome {
    if (200..300).contains(&status) {
        return intent_body(status, body);
    }
    let Some(error) = parse_error(body) else {
        return ChargeOutcome::Unknown {
            charge_ref: None,
            reason: format!(
                "Stripe answered HTTP {status} with a body that is not an error object"
            ),
        };
    };
    let unknown = |error: &StripeError| ChargeOutcome::Unknown {
        charge_ref: error.payment_intent.clone(),
        reason: describe(status, error),
    };
    match status {
        402 => ChargeOutcome::Declined {
            charge_ref: error.payment_intent.clone(),
            code: error
                .decline_code
                .clone()
                .or_else(|| error.code.clone())
                .unwrap_or_else(|| "card_declined".into()),
            message: error
                .message
                .clone()
                .unwrap_or_else(|| "The card was declined.".into()),
        },
        400 if error.kind.as_deref() == Some("idempotency_error") => unknown(&error),
        401 => ChargeOutcome::Declined {
            charge_ref: None,
            code: "authentication_failed".into(),
            message: "Stripe refused the API key (HTTP 401); check gateways.stripe.secret_key"
                .into(),
        },
        400 | 403 | 404 => ChargeOutcome::Declined {
            charge_ref: error.payment_intent.clone(),
            code: error
                .code
                .clone()
                .or_else(|| error.kind.clone())
                .unwrap_or_else(|| format!("http_{status}")),
            message: describe(status, &error),
        },
        _ => unknown(&error),
    }
}

/// The answer to `GET /v1/payment_intents/{id}`: any refusal or failure is `Unknown`.
fn retrieve_answer(charge_ref: &str, status: u16, body: &[u8]) -> ChargeOutcome {
    if (200..300).contains(&status) {
        return match intent_body(status, body) {
            ChargeOutcome::Unknown {
                charge_ref: None,
                reason,
            } => ChargeOutcome::Unknown {
                charge_ref: Some(charge_ref.to_owned()),
                reason,
            },
            outcome => outcome,
        };
    }
    let reason = match parse_error(body) {
        Some(error) if status == 401 => format!(
            "Stripe refused the API key (HTTP 401){}",
            error.kind.map(|k| format!(" ({k})")).unwrap_or_default()
        ),
        Some(error) => describe(status, &error),
        None => format!("Stripe answered HTTP {status} with a body that is not an error object"),
    };
    ChargeOutcome::Unknown {
        charge_ref: Some(charge_ref.to_owned()),
        reason,
    }
}

/// The answer to `POST /v1/refunds` as an outcome.
fn refund_answer(status: u16, body: &[u8]) -> RefundOutcome {
    if (200..300).contains(&status) {
        let Ok(refund) = serde_json::from_slice::<Value>(body) else {
            return RefundOutcome::Unknown {
                reason: format!("Stripe answered HTTP {status} with a body that is not a Refund"),
            };
        };
        let id = refund
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let state = refund.get("status").and_then(Value::as_str).unwrap_or("");
        return match (id, state) {
            (Some(id), "succeeded" | "pending") => RefundOutcome::Refunded {
                refund_ref: id.to_owned(),
            },
            (Some(id), "failed" | "canceled") => RefundOutcome::Failed {
                code: refund
                    .get("failure_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("refund_failed")
                    .to_owned(),
                message: format!("Stripe refund {id} is {state}"),
            },
            (Some(id), other) => RefundOutcome::Unknown {
                reason: format!("Stripe refund {id} is in status {other:?}"),
            },
            (None, _) => RefundOutcome::Unknown {
                reason: "Stripe answered without a Refund id".into(),
            },
        };
    }
    let Some(error) = parse_error(body) else {
        return RefundOutcome::Unknown {
            reason: format!(
                "Stripe answered HTTP {status} with a body that is not an error object"
            ),
        };
    };
    let decided = (400..500).contains(&status)
        && !matches!(status, 409 | 429)
        && error.kind.as_deref() != Some("idempotency_error");
    if !decided {
        return RefundOutcome::Unknown {
            reason: describe(status, &error),
        };
    }
    if status == 401 {
        return RefundOutcome::Failed {
            code: "authentication_failed".into(),
            message: "Stripe refused the API key (HTTP 401); check gateways.stripe.secret_key"
                .into(),
        };
    }
    RefundOutcome::Failed {
        code: error
            .code
            .clone()
            .or_else(|| error.kind.clone())
            .unwrap_or_else(|| format!("http_{status}")),
        message: describe(status, &error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ocart_domain::{Currency, Money};
    use serde_json::json;

    fn bytes(value: Value) -> Vec<u8> {
        serde_json::to_vec(&value).unwrap()
    }

    fn declined(charge_ref: Option<&str>, code: &str) -> (Option<String>, String) {
        (charge_ref.map(str::to_owned), code.to_owned())
    }

    #[test]
    fn intent_statuses_map_to_outcomes() {
        let cases: Vec<(Value, ChargeOutcome)> = vec![
            (
                json!({"id": "pi_1", "object": "payment_intent", "status": "succeeded"}),
                ChargeOutcome::Succeeded {
                    charge_ref: "pi_1".into(),
                },
            ),
            (
                json!({"id": "pi_2", "status": "requires_action", "client_secret": "pi_2_secret_x",
                       "next_action": {"type": "redirect_to_url", "redirect_to_url": {"url": "https://hooks.stripe.com/3ds", "return_url": "https://shop/back"}}}),
                ChargeOutcome::RequiresAction {
                    charge_ref: "pi_2".into(),
                    action_url: Some("https://hooks.stripe.com/3ds".into()),
                    client_secret: Some("pi_2_secret_x".into()),
                },
            ),
            (
                json!({"id": "pi_3", "status": "requires_action", "client_secret": "pi_3_secret_x",
                       "next_action": {"type": "use_stripe_sdk", "use_stripe_sdk": {}}}),
                ChargeOutcome::RequiresAction {
                    charge_ref: "pi_3".into(),
                    action_url: None,
                    client_secret: Some("pi_3_secret_x".into()),
                },
            ),
            (
                json!({"id": "pi_4", "status": "processing"}),
                ChargeOutcome::Unknown {
                    charge_ref: Some("pi_4".into()),
                    reason: "the PaymentIntent is processing; read it back later".into(),
                },
            ),
            (
                json!({"id": "pi_5", "status": "requires_payment_method",
                       "last_payment_error": {"type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}}),
                ChargeOutcome::Declined {
                    charge_ref: Some("pi_5".into()),
                    code: "insufficient_funds".into(),
                    message: "Your card has insufficient funds.".into(),
                },
            ),
            (
                json!({"id": "pi_6", "status": "requires_payment_method",
                       "last_payment_error": {"code": "payment_intent_authentication_failure", "message": "3DS failed."}}),
                ChargeOutcome::Declined {
                    charge_ref: Some("pi_6".into()),
                    code: "payment_intent_authentication_failure".into(),
                    message: "3DS failed.".into(),
                },
            ),
            (
                json!({"id": "pi_7", "status": "canceled", "cancellation_reason": "abandoned"}),
                ChargeOutcome::Declined {
                    charge_ref: Some("pi_7".into()),
                    code: "canceled_abandoned".into(),
                    message: "The payment was canceled.".into(),
                },
            ),
            (
                json!({"id": "pi_8", "status": "requires_capture"}),
                ChargeOutcome::Unknown {
                    charge_ref: Some("pi_8".into()),
                    reason: "the PaymentIntent is in status \"requires_capture\"".into(),
                },
            ),
        ];
        for (intent, expected) in cases {
            assert_eq!(
                charge_answer(200, &bytes(intent.clone())),
                expected,
                "{intent}"
            );
        }
    }

    #[test]
    fn errors_map_to_declined_only_when_nothing_was_charged() {
        let card = json!({"error": {"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                                    "message": "Your card was declined.", "payment_intent": {"id": "pi_9", "status": "requires_payment_method"}}});
        let no_decline_code = json!({"error": {"type": "card_error", "code": "expired_card", "message": "Your card has expired."}});
        let invalid = json!({"error": {"type": "invalid_request_error", "code": "parameter_missing", "param": "amount", "message": "Missing required param: amount."}});
        let idempotency = json!({"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}});
        let in_use = json!({"error": {"type": "invalid_request_error", "code": "idempotency_key_in_use", "message": "There is currently another in-progress request using this Idempotent Key."}});
        let auth = json!({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_****cart"}});
        let forbidden = json!({"error": {"type": "invalid_request_error", "code": "secret_key_required", "message": "This API call cannot be made with a publishable API key."}});
        let missing = json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such PaymentMethod: 'pm_x'"}});
        let rate = json!({"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests."}});
        let api = json!({"error": {"type": "api_error", "message": "Something went wrong."}});

        let is_declined =
            |status: u16, body: &Value| match charge_answer(status, &bytes(body.clone())) {
                ChargeOutcome::Declined {
                    charge_ref, code, ..
                } => Some((charge_ref, code)),
                _ => None,
            };
        assert_eq!(
            is_declined(402, &card),
            Some(declined(Some("pi_9"), "generic_decline"))
        );
        assert_eq!(
            is_declined(402, &no_decline_code),
            Some(declined(None, "expired_card"))
        );
        assert_eq!(
            is_declined(400, &invalid),
            Some(declined(None, "parameter_missing"))
        );
        assert_eq!(
            is_declined(401, &auth),
            Some(declined(None, "authentication_failed"))
        );
        assert_eq!(
            is_declined(403, &forbidden),
            Some(declined(None, "secret_key_required"))
        );
        assert_eq!(
            is_declined(404, &missing),
            Some(declined(None, "resource_missing"))
        );
        for (status, body) in [
            (400, &idempotency),
            (409, &in_use),
            (429, &rate),
            (500, &api),
            (502, &api),
            (503, &api),
            (422, &invalid),
            (302, &api),
        ] {
            assert!(
                matches!(
                    charge_answer(status, &bytes(body.clone())),
                    ChargeOutcome::Unknown { .. }
                ),
                "HTTP {status} {body} must be unknown"
            );
        }
        // The 401's message is OCart's own: Stripe's names (part of) the key.
        let ChargeOutcome::Declined { message, .. } = charge_answer(401, &bytes(auth)) else {
            unreachable!()
        };
        assert!(!message.contains("sk_test"), "{message}");
    }

    #[test]
    fn bodies_that_do_not_parse_are_unknown() {
        for status in [200, 201, 400, 401, 402, 404, 500] {
            for body in [
                &b""[..],
                b"<html>502</html>",
                b"{\"error\": 1}",
                b"[]",
                b"{}",
            ] {
                let outcome = charge_answer(status, body);
                assert!(
                    matches!(outcome, ChargeOutcome::Unknown { .. }),
                    "HTTP {status} {:?} gave {outcome:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn a_read_back_that_fails_is_unknown_with_its_reference() {
        let missing = bytes(
            json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such payment_intent: 'pi_x'"}}),
        );
        for status in [400, 401, 403, 404, 429, 500] {
            let outcome = retrieve_answer("pi_x", status, &missing);
            assert!(
                matches!(&outcome, ChargeOutcome::Unknown { charge_ref: Some(r), .. } if r == "pi_x"),
                "HTTP {status} gave {outcome:?}"
            );
        }
        assert_eq!(
            retrieve_answer("pi_x", 200, b"not json"),
            ChargeOutcome::Unknown {
                charge_ref: Some("pi_x".into()),
                reason: "Stripe answered HTTP 200 with a body that is not a PaymentIntent".into()
            }
        );
        assert_eq!(
            retrieve_answer(
                "pi_x",
                200,
                &bytes(json!({"id": "pi_x", "status": "succeeded"}))
            ),
            ChargeOutcome::Succeeded {
                charge_ref: "pi_x".into()
            }
        );
    }

    #[test]
    fn refund_answers_map_to_outcomes() {
        let ok = |status: &str| bytes(json!({"id": "re_1", "object": "refund", "status": status}));
        assert_eq!(
            refund_answer(200, &ok("succeeded")),
            RefundOutcome::Refunded {
                refund_ref: "re_1".into()
            }
        );
        assert_eq!(
            refund_answer(200, &ok("pending")),
            RefundOutcome::Refunded {
                refund_ref: "re_1".into()
            }
        );
        assert!(matches!(
            refund_answer(200, &ok("failed")),
            RefundOutcome::Failed { .. }
        ));
        assert!(matches!(
            refund_answer(200, &ok("requires_action")),
            RefundOutcome::Unknown { .. }
        ));
        let already = bytes(
            json!({"error": {"type": "invalid_request_error", "code": "charge_already_refunded", "message": "Charge ch_1 has already been refunded."}}),
        );
        assert!(matches!(
            refund_answer(400, &already),
            RefundOutcome::Failed { code, .. } if code == "charge_already_refunded"
        ));
        let idempotency =
            bytes(json!({"error": {"type": "idempotency_error", "message": "Keys …"}}));
        assert!(matches!(
            refund_answer(400, &idempotency),
            RefundOutcome::Unknown { .. }
        ));
        for status in [409, 429, 500, 503] {
            assert!(matches!(
                refund_answer(status, &already),
                RefundOutcome::Unknown { .. }
            ));
        }
        assert!(matches!(
            refund_answer(200, b"<html>"),
            RefundOutcome::Unknown { .. }
        ));
    }

    #[test]
    fn the_form_speaks_stripe() {
        let request = ChargeRequest {
            idempotency_key: "k1".into(),
            amount: Money::new(1299, Currency::parse("currency", "usd").unwrap()).unwrap(),
            customer: Some("cus_1".into()),
            payment_method: "pm_card_visa".into(),
            description: "Upsell".into(),
            invoice_id: "inv-1".into(),
            return_url: Some("https://shop.example/back".into()),
            metadata: vec![
                ("acceptance_id".into(), "acc-1".into()),
                ("odd[key]".into(), "v".into()),
            ],
        };
        let form = charge_form(&request);
        let get = |k: &str| {
            form.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("amount"), Some("1299"));
        assert_eq!(get("currency"), Some("usd"));
        assert_eq!(get("confirm"), Some("true"));
        assert_eq!(get("customer"), Some("cus_1"));
        assert_eq!(get("payment_method"), Some("pm_card_visa"));
        assert_eq!(get("payment_method_types[]"), Some("card"));
        assert_eq!(get("metadata[acceptance_id]"), Some("acc-1"));
        assert_eq!(get("metadata[odd_key_]"), Some("v"));
        assert_eq!(get("metadata[invoice_id]"), Some("inv-1"));
        assert_eq!(get("return_url"), Some("https://shop.example/back"));
        assert_eq!(get("off_session"), None);
        let without = charge_form(&ChargeRequest {
            customer: None,
            return_url: None,
            ..request
        });
        assert!(!without
            .iter()
            .any(|(k, _)| k == "customer" || k == "return_url"));
    }

    #[test]
    fn refund_reasons_are_the_three_stripe_accepts() {
        assert_eq!(refund_reason(None), None);
        assert_eq!(refund_reason(Some("  ")), None);
        assert_eq!(refund_reason(Some("duplicate")), Some("duplicate"));
        assert_eq!(refund_reason(Some("Fraudulent")), Some("fraudulent"));
        assert_eq!(
            refund_reason(Some("the shopper changed their mind")),
            Some("requested_by_customer")
        );
    }

    #[test]
    fn ids_in_paths_are_percent_encoded() {
        assert_eq!(encode_path_segment("pi_3Abc"), "pi_3Abc");
        assert_eq!(encode_path_segment("../x?y=1"), "..%2Fx%3Fy%3D1");
        assert_eq!(encode_path_segment("a b/é"), "a%20b%2F%C3%A9");
    }

    #[test]
    fn config_is_validated_and_never_shows_the_key() {
        let config = |key: &str, base: Option<&str>| StripeConfig {
            secret_key: SecretString::from(key.to_owned()),
            webhook_secrets: vec![],
            api_base: base.map(str::to_owned),
            timeout_secs: None,
        };
        let live = Stripe::from_config(&config("sk_live_abcdef123", None)).unwrap();
        assert_eq!(live.state().mode, "live");
        assert_eq!(live.state().api_base, API_BASE);
        let test =
            Stripe::from_config(&config("sk_test_abcdef123", Some("http://127.0.0.1:9/"))).unwrap();
        assert_eq!(test.state().mode, "test");
        assert_eq!(test.state().api_base, "http://127.0.0.1:9");
        for shown in [
            format!("{test:?}"),
            format!("{:?}", config("sk_test_abcdef123", None)),
            format!("{:?}", test.state()),
        ] {
            assert!(!shown.contains("abcdef123"), "{shown}");
        }
        for (key, base) in [
            ("pk_test_abcdef123", None),
            ("sk_test_abc def", None),
            ("sk_test_abcdef123", Some("ftp://api.stripe.com")),
            ("sk_test_abcdef123", Some("not a url")),
            ("sk_test_abcdef123", Some("https://user:pw@api.stripe.com")),
        ] {
            let error = Stripe::from_config(&config(key, base))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("gateways.stripe."), "{error}");
            assert!(!error.contains("abcdef123"), "{error}");
        }
        let mut zero = config("sk_test_abcdef123", None);
        zero.timeout_secs = Some(0);
        assert!(Stripe::from_config(&zero).is_err());
    }
}
