//! One-click upsells over HTTP (issue 11). Admin: `POST /upsells/issue-token` (a token for a
//! paid parent order's offer step), `GET /upsells/acceptances/{id}`, `POST
//! /upsells/acceptances/{id}/refund`. Public, the token being the credential: the hosted page
//! `GET /upsells/page`, `POST /upsells/{offer}/accept` and `/decline` (JSON or a form POST),
//! `POST /upsells/confirm` after a 3DS / payer action, and, with the sandbox gateway, its 3DS
//! page `GET|POST /sandbox/3ds/{charge_ref}`.
//!
//! Refusals are problem documents, each with its own type:
//! - `upsell-token-invalid` 401: the token is malformed or its signature does not verify;
//! - `upsell-token-expired` 410;
//! - `upsell-token-foreign` 403: a valid token for another offer or acceptance;
//! - `upsell-step-decided` 409: the step was decided already (the token is burned), with the
//!   existing `acceptance_id` and `acceptance_status` (and `acceptance`: both);
//! - `upsell-parent-unpaid` 409, `upsell-no-payment` 409 (no saved payment method, or its
//!   gateway is not configured), `upsell-offer-ineligible` 422 (archived, not an upsell, not
//!   the step's offer any more);
//! - `idempotency-key-reused` 422 (the same `Idempotency-Key` with another body) and
//!   `idempotency-key-in-flight` 409 with `Retry-After: 1`.
//!
//! A form POST (`application/x-www-form-urlencoded`) answers 303 to the hosted page instead of
//! JSON, also when the step was decided already (the page shows the decision).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use ocart_domain::token::Capability;
use ocart_domain::upsell::{AcceptanceStatus, RefundStatus, UpsellAcceptance, UpsellKind};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::{AppState, RequestContext};
use crate::upsell_page;
use crate::usecases::upsells::{self as uc, Decide, Next, UpsellsError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_token))
        .routes(routes!(page))
        .routes(routes!(accept))
        .routes(routes!(decline))
        .routes(routes!(confirm))
        .routes(routes!(returned))
        .routes(routes!(show_acceptance))
        .routes(routes!(refund))
        .routes(routes!(sandbox_3ds_page, sandbox_3ds))
}

const WRITE: &[Capability] = &[Capability::OcartManageOffers, Capability::OcartManage];
const READ: &[Capability] = &[
    Capability::OcartManageOffers,
    Capability::OcartManage,
    Capability::OcartViewReports,
];

/// A problem document with an upsell-specific type and extension members.
fn problem(status: StatusCode, slug: &str, detail: &str, extra: serde_json::Value) -> Response {
    let mut body = json!({
        "type": format!("https://ocart.dev/problems/{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            body.insert(k.clone(), v.clone());
        }
    }
    let mut response = (status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// The answer to a use case's refusal.
fn refusal(err: UpsellsError) -> Response {
    let detail = err.to_string();
    let none = serde_json::Value::Null;
    match &err {
        UpsellsError::TokenInvalid => problem(
            StatusCode::UNAUTHORIZED,
            "upsell-token-invalid",
            &detail,
            none,
        ),
        UpsellsError::TokenExpired => {
            problem(StatusCode::GONE, "upsell-token-expired", &detail, none)
        }
        UpsellsError::TokenForeign(_) => {
            problem(StatusCode::FORBIDDEN, "upsell-token-foreign", &detail, none)
        }
        UpsellsError::Decided {
            acceptance_id,
            status,
            ..
        } => problem(
            StatusCode::CONFLICT,
            "upsell-step-decided",
            &detail,
            json!({
                "acceptance_id": acceptance_id,
                "acceptance_status": status,
                "acceptance": {"acceptance_id": acceptance_id, "status": status},
            }),
        ),
        UpsellsError::Unpaid(_) => {
            problem(StatusCode::CONFLICT, "upsell-parent-unpaid", &detail, none)
        }
        UpsellsError::NoPayment(_) => {
            problem(StatusCode::CONFLICT, "upsell-no-payment", &detail, none)
        }
        UpsellsError::Ineligible(_) => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "upsell-offer-ineligible",
            &detail,
            none,
        ),
        UpsellsError::KeyReused => problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            &detail,
            none,
        ),
        UpsellsError::InFlight => {
            let mut response = problem(
                StatusCode::CONFLICT,
                "idempotency-key-in-flight",
                &detail,
                none,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        _ => ApiError::from(err).into_response(),
    }
}

/// Whether the request is a form POST (a browser without JavaScript).
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// The body as JSON or, for a form POST, form-encoded.
fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    if is_form(headers) {
        serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::validation("body", format!("is not a valid form: {e}")))
    } else {
        crate::json::parse(body)
    }
}

/// `Idempotency-Key` (or `X-Idempotency-Key`), checked.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, UpsellsError> {
    let Some(value) = headers
        .get("idempotency-key")
        .or_else(|| headers.get("x-idempotency-key"))
    else {
        return Ok(None);
    };
    let raw = value.to_str().map_err(|_| {
        UpsellsError::Invalid(vec![ocart_domain::FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        )])
    })?;
    uc::check_idempotency_key(raw).map(Some)
}

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location.to_owned()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
    )
        .into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(body),
    )
        .into_response()
}

/// What issuing a token asks for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenBody {
    /// The parent order (the store's order id), recorded and paid, with a saved payment.
    #[schema(
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub order_id: String,
    /// The funnel's slug.
    #[schema(
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub funnel_id: String,
    /// The upsell or downsell step's key.
    #[schema(
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub step: String,
    /// Where the shopper goes after the funnel's last offer (signed into the token): an
    /// http(s) URL of at most 2048 characters, without spaces.
    #[serde(default)]
    #[schema(max_length = 2048, pattern = "^https?://[!-~]+$")]
    pub return_url: Option<String>,
}

/// A one-click token.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    pub token: String,
    /// The token's single-use id.
    pub jti: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// The step's offer.
    pub offer_id: String,
    /// The hosted offer page for this token.
    pub page_url: String,
}

/// Issues a one-click token for one offer step of a paid parent order (lifetime
/// `upsells.one_click_token_ttl_min`).
#[utoipa::path(post, path = "/ocart/v1/upsells/issue-token", tag = "upsells", request_body = IssueTokenBody,
    responses(
        (status = 201, body = IssuedToken),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 404, description = "No such order or funnel", body = crate::error::Problem),
        (status = 409, description = "The order is not paid or has no usable saved payment (`upsell-parent-unpaid`, `upsell-no-payment`)", body = crate::error::Problem),
        (status = 422, description = "Invalid fields, or the step's offer is not eligible (`upsell-offer-ineligible`)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn issue_token(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let request: IssueTokenBody = crate::json::parse(&body)?;
    let input = uc::IssueToken {
        order_id: request.order_id,
        funnel_id: request.funnel_id,
        step: request.step,
        return_url: request.return_url,
    };
    Ok(match uc::issue_token(&state.core, input).await {
        Ok(issued) => (
            StatusCode::CREATED,
            Json(IssuedToken {
                expires_at: issued.claims.expires_at(),
                jti: issued.claims.jti,
                offer_id: issued.claims.offer_id,
                page_url: issued.page_url,
                token: issued.token,
            }),
        )
            .into_response(),
        Err(err) => refusal(err),
    })
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TokenQuery {
    /// The one-click token.
    pub token: String,
}

/// The hosted offer page: the offer with accept and decline forms while the step is open, else
/// the decision's state (processing, the gateway's action, the outcome and the way on).
/// Rendering the offer records the step's visit (`upsell/shown`, once per parent order and
/// step), which `GET /reports/funnels` counts.
#[utoipa::path(get, path = "/ocart/v1/upsells/page", tag = "upsells", params(TokenQuery),
    responses(
        (status = 200, description = "The offer, or the decision's state", content_type = "text/html", body = String),
        (status = 401, description = "The token is not valid", content_type = "text/html", body = String),
        (status = 410, description = "The token has expired and the step is undecided", content_type = "text/html", body = String)))]
pub async fn page(
    State(state): State<AppState>,
    ctx: RequestContext,
    Query(query): Query<TokenQuery>,
) -> Response {
    match uc::page(&state.core, &query.token).await {
        Ok(view) => {
            // The step's visit for the funnel report (once per order and step); a failure to
            // record it never keeps the shopper from the offer.
            let meta = ctx.meta("public:upsell".into(), &state);
            if let Err(err) =
                crate::usecases::funnel_visits::record_upsell_view(&state.core, &view, &meta).await
            {
                tracing::warn!(error = %err, "the upsell page's visit was not recorded");
            }
            let fallback = sandbox_action(&state, view.acceptance.as_ref(), &query.token);
            html(StatusCode::OK, upsell_page::render_page(&view, fallback))
        }
        Err(UpsellsError::TokenInvalid) => html(
            StatusCode::UNAUTHORIZED,
            upsell_page::message_page(
                "This link is not valid",
                "The offer link may be incomplete.",
                None,
            ),
        ),
        Err(UpsellsError::TokenExpired) => html(
            StatusCode::GONE,
            upsell_page::message_page(
                "This offer has expired",
                "One-click offers are reserved for a short time after your order.",
                None,
            ),
        ),
        Err(other) => refusal(other),
    }
}

/// The sandbox's 3DS page for a charge waiting for the shopper that names no action URL.
fn sandbox_action(
    state: &AppState,
    acceptance: Option<&UpsellAcceptance>,
    token: &str,
) -> Option<String> {
    let acceptance = acceptance?;
    if acceptance.status() != Some(AcceptanceStatus::RequiresAction)
        || acceptance.gateway() != "sandbox"
        || state.core.gateways.sandbox().is_none()
    {
        return None;
    }
    let charge_ref = acceptance.charge_ref()?;
    Some(format!(
        "{}/ocart/v1/sandbox/3ds/{}?token={}",
        uc::public_base(&state.core),
        upsell_page::urlencode(charge_ref),
        upsell_page::urlencode(token)
    ))
}

/// An accept or a decline: the token (JSON or a form field).
#[derive(Debug, Deserialize, ToSchema)]
pub struct DecisionBody {
    /// The one-click token of the offer's step.
    pub token: String,
}

/// An accept, answered at once (the charge follows).
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptReply {
    pub acceptance_id: String,
    /// Always `processing`: the charge is the charger's; poll `status_url`.
    pub status: String,
    /// The acceptance's state (`GET /upsells/acceptances/{id}?token=…`).
    pub status_url: String,
    /// The hosted page, which shows the decision's state.
    pub page_url: String,
}

fn status_url(state: &AppState, id: &str, token: &str) -> String {
    format!(
        "{}/ocart/v1/upsells/acceptances/{id}?token={}",
        uc::public_base(&state.core),
        upsell_page::urlencode(token)
    )
}

async fn decision_input(
    headers: &HeaderMap,
    offer_id: String,
    body: &[u8],
) -> Result<Decide, Response> {
    let request_key = idempotency_key(headers).map_err(refusal)?;
    let request: DecisionBody = parse_body(headers, body).map_err(IntoResponse::into_response)?;
    Ok(Decide {
        offer_id,
        token: request.token,
        request_hash: request_key.as_ref().map(|_| uc::body_hash(body)),
        request_key,
    })
}

/// The shopper accepts the offer: records the decision and the charge key
/// (`upsell/before_charge`) and answers at once. The same `Idempotency-Key` and body answer
/// the same; the step is decided once, whatever the key.
#[utoipa::path(post, path = "/ocart/v1/upsells/{id}/accept", tag = "upsells",
    params(("id" = String, Path, description = "The offer id (the token's)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters; `X-Idempotency-Key` is read too", pattern = "^[!-~]([ -~]{0,253}[!-~])?$")),
    request_body(content(
        (DecisionBody = "application/json"),
        (DecisionBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 202, body = AcceptReply),
        (status = 303, description = "A form POST: to the hosted page", headers(("Location" = String, description = "The hosted page"))),
        (status = 401, description = "`upsell-token-invalid`", body = crate::error::Problem),
        (status = 403, description = "`upsell-token-foreign`: a token for another offer", body = crate::error::Problem),
        (status = 404, description = "The parent order or funnel is gone", body = crate::error::Problem),
        (status = 409, description = "`upsell-step-decided` (with `acceptance_id`, `acceptance_status`), `upsell-parent-unpaid`, `upsell-no-payment`, `idempotency-key-in-flight` (Retry-After)", body = crate::error::Problem),
        (status = 410, description = "`upsell-token-expired`", body = crate::error::Problem),
        (status = 422, description = "`upsell-offer-ineligible`, `idempotency-key-reused`, invalid fields", body = crate::error::Problem)))]
pub async fn accept(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let input = match decision_input(&headers, id, &body).await {
        Ok(input) => input,
        Err(response) => return response,
    };
    let token = input.token.clone();
    let meta = ctx.meta("public:upsell".into(), &state);
    let form = is_form(&headers);
    match uc::accept(&state.core, input, &meta).await {
        Ok(decision) => {
            let page_url = uc::page_url(&state.core, &token);
            if form {
                return see_other(&page_url);
            }
            let id = decision.acceptance.id().to_owned();
            (
                StatusCode::ACCEPTED,
                Json(AcceptReply {
                    status_url: status_url(&state, &id, &token),
                    acceptance_id: id,
                    status: "processing".into(),
                    page_url,
                }),
            )
                .into_response()
        }
        Err(UpsellsError::Decided { .. }) if form => see_other(&uc::page_url(&state.core, &token)),
        Err(err) => refusal(err),
    }
}

/// Where the funnel goes next.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextStep {
    pub step: String,
    pub offer_id: String,
    /// A fresh token for that step.
    pub token: String,
    pub page_url: String,
}

/// A decline.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeclineReply {
    pub acceptance_id: String,
    /// `declined_by_shopper`
    pub status: String,
    /// The next offer on the funnel's `declined` branch (a downsell), or null.
    pub next: Option<NextStep>,
    /// With no next offer: the token's return URL, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
}

/// The shopper declines the offer (`upsell/declined`); answers where the funnel goes next on
/// its `declined` branch.
#[utoipa::path(post, path = "/ocart/v1/upsells/{id}/decline", tag = "upsells",
    params(("id" = String, Path, description = "The offer id (the token's)"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–255 printable ASCII characters; `X-Idempotency-Key` is read too", pattern = "^[!-~]([ -~]{0,253}[!-~])?$")),
    request_body(content(
        (DecisionBody = "application/json"),
        (DecisionBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, body = DeclineReply),
        (status = 303, description = "A form POST: to the next offer's page or the return URL", headers(("Location" = String, description = "Where the shopper goes next"))),
        (status = 401, description = "`upsell-token-invalid`", body = crate::error::Problem),
        (status = 403, description = "`upsell-token-foreign`", body = crate::error::Problem),
        (status = 409, description = "`upsell-step-decided`, `idempotency-key-in-flight`", body = crate::error::Problem),
        (status = 410, description = "`upsell-token-expired`", body = crate::error::Problem),
        (status = 422, description = "`idempotency-key-reused`, invalid fields", body = crate::error::Problem)))]
pub async fn decline(
    State(state): State<AppState>,
    ctx: RequestContext,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let input = match decision_input(&headers, id, &body).await {
        Ok(input) => input,
        Err(response) => return response,
    };
    let token = input.token.clone();
    let meta = ctx.meta("public:upsell".into(), &state);
    let form = is_form(&headers);
    let decision = match uc::decline(&state.core, input, &meta).await {
        Ok(decision) => decision,
        Err(UpsellsError::Decided { .. }) if form => {
            return see_other(&uc::page_url(&state.core, &token))
        }
        Err(err) => return refusal(err),
    };
    let next = match uc::next_page(
        &state.core,
        &decision.claims,
        &decision.acceptance,
        ocart_domain::funnel::Outcome::Declined,
    )
    .await
    {
        Ok(next) => next,
        Err(err) => return refusal(err),
    };
    if form {
        return match &next {
            Next::Offer { page_url, .. } => see_other(page_url),
            Next::Done {
                return_url: Some(url),
            } => see_other(url),
            Next::Done { return_url: None } => html(
                StatusCode::OK,
                upsell_page::message_page("No problem", "Nothing was added to your order.", None),
            ),
        };
    }
    let (next, return_url) = match next {
        Next::Offer {
            step,
            offer_id,
            token,
            page_url,
        } => (
            Some(NextStep {
                step,
                offer_id,
                token,
                page_url,
            }),
            None,
        ),
        Next::Done { return_url } => (None, return_url),
    };
    Json(DeclineReply {
        acceptance_id: decision.acceptance.id().to_owned(),
        status: AcceptanceStatus::DeclinedByShopper.as_str().into(),
        next,
        return_url,
    })
    .into_response()
}

/// One refund of an acceptance.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    pub refund_id: String,
    pub amount: i64,
    /// requested, refunded or failed
    pub status: String,
    pub refund_ref: Option<String>,
    pub store_refund_id: Option<String>,
}

/// An acceptance's state, read from its aggregate.
#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptanceView {
    pub acceptance_id: String,
    pub offer_id: String,
    /// upsell or downsell
    pub kind: Option<String>,
    pub funnel_id: String,
    pub step: String,
    pub parent_order_id: String,
    /// charging, requires_action, unknown, succeeded, accepted, declined, declined_by_shopper
    pub status: String,
    /// What the shopper is shown: processing, requires_action, succeeded, declined,
    /// declined_by_shopper
    pub shown_status: String,
    /// Minor units of `currency` (0 for a decline).
    pub amount: i64,
    pub currency: Option<String>,
    pub gateway: Option<String>,
    pub charge_ref: Option<String>,
    /// Where the gateway sends the shopper while it waits for them.
    pub action_url: Option<String>,
    pub child_order_id: Option<String>,
    /// Minor units refunded or being refunded.
    pub refunded: i64,
    pub refunds: Vec<RefundView>,
}

impl From<&UpsellAcceptance> for AcceptanceView {
    fn from(a: &UpsellAcceptance) -> Self {
        let status = a.status().unwrap_or(AcceptanceStatus::Charging);
        let present = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            acceptance_id: a.id().to_owned(),
            offer_id: a.offer_id().to_owned(),
            kind: a.kind().map(|k| {
                match k {
                    UpsellKind::Upsell => "upsell",
                    UpsellKind::Downsell => "downsell",
                }
                .to_owned()
            }),
            funnel_id: a.funnel_id().to_owned(),
            step: a.step().to_owned(),
            parent_order_id: a.parent_order_id().to_owned(),
            status: status.as_str().into(),
            shown_status: status.shown().into(),
            amount: a.amount(),
            currency: a.currency().map(|c| c.as_str().to_owned()),
            gateway: present(a.gateway()),
            charge_ref: a.charge_ref().map(str::to_owned),
            action_url: a.action_url().map(str::to_owned),
            child_order_id: a.child_order_id().map(str::to_owned),
            refunded: a.refunded(),
            refunds: a
                .refunds()
                .iter()
                .map(|r| RefundView {
                    refund_id: r.refund_id.clone(),
                    amount: r.amount,
                    status: match r.status {
                        RefundStatus::Requested => "requested",
                        RefundStatus::Refunded => "refunded",
                        RefundStatus::Failed => "failed",
                    }
                    .into(),
                    refund_ref: r.refund_ref.clone(),
                    store_refund_id: r.store_refund_id.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct OptionalTokenQuery {
    /// A one-click token of the acceptance's step (expired or not): reads it without a bearer
    /// token.
    pub token: Option<String>,
    /// A long poll: answer once the acceptance's `status` is no longer this one (at once when
    /// it is not), or after `wait` seconds.
    #[param(
        pattern = "^(charging|requires_action|unknown|succeeded|accepted|declined|declined_by_shopper)$"
    )]
    pub status: Option<String>,
    /// With `status`: the longest the answer waits for a change, in seconds (default 10).
    #[param(minimum = 0, maximum = 30)]
    pub wait: Option<u32>,
}

impl OptionalTokenQuery {
    /// The status to wait past and for how long, checked.
    fn long_poll(&self) -> Result<(Option<AcceptanceStatus>, std::time::Duration), ApiError> {
        let max = uc::MAX_STATUS_WAIT.as_secs();
        let wait = u64::from(self.wait.unwrap_or(10));
        if wait > max {
            return Err(ApiError::validation(
                "wait",
                format!("must be from 0 to {max} seconds"),
            ));
        }
        let status = match self.status.as_deref() {
            None => None,
            Some(raw) => Some(
                serde_json::from_value::<AcceptanceStatus>(serde_json::Value::String(raw.into()))
                    .map_err(|_| {
                    ApiError::validation(
                        "status",
                        "must be one of charging, requires_action, unknown, succeeded, \
                             accepted, declined, declined_by_shopper",
                    )
                })?,
            ),
        };
        Ok((status, std::time::Duration::from_secs(wait)))
    }
}

/// An acceptance's state (consistent: read from its aggregate). A bearer token with an offers
/// or reports capability, or `?token=` of that acceptance's step. With `?status=…` it is a
/// long poll: the answer comes once the status has moved on from that one, or after `wait`
/// seconds with the status unchanged.
#[utoipa::path(get, path = "/ocart/v1/upsells/acceptances/{id}", tag = "upsells",
    params(("id" = String, Path, description = "The acceptance id (`acc_…`)"), OptionalTokenQuery),
    responses(
        (status = 200, body = AcceptanceView),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)),
    security((), ("bearer" = [])))]
pub async fn show_acceptance(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<OptionalTokenQuery>,
    request: axum::extract::Request,
) -> Response {
    if query.token.is_none() {
        let (mut parts, _) = request.into_parts();
        let caller =
            match <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
                &mut parts, &state,
            )
            .await
            {
                Ok(caller) => caller,
                Err(err) => return err.into_response(),
            };
        if let Err(err) = caller.require(READ) {
            return err.into_response();
        }
    }
    let (while_status, wait) = match query.long_poll() {
        Ok(poll) => poll,
        Err(err) => return err.into_response(),
    };
    match uc::acceptance_after(&state.core, &id, query.token.as_deref(), while_status, wait).await {
        Ok(acceptance) => Json(AcceptanceView::from(&acceptance)).into_response(),
        Err(err) => refusal(err),
    }
}

/// After the shopper's 3DS / payer action.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfirmBody {
    pub acceptance_id: String,
    /// The one-click token of the acceptance's step (expired or not).
    pub token: String,
}

/// After the shopper's 3DS / payer action: reads the payment back from the gateway (never
/// trusting the browser) and records the answer; answers the acceptance's state.
#[utoipa::path(post, path = "/ocart/v1/upsells/confirm", tag = "upsells",
    request_body(content(
        (ConfirmBody = "application/json"),
        (ConfirmBody = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, body = AcceptanceView),
        (status = 303, description = "A form POST: to the hosted page", headers(("Location" = String, description = "The hosted page"))),
        (status = 401, description = "`upsell-token-invalid`", body = crate::error::Problem),
        (status = 403, description = "`upsell-token-foreign`: a token of another acceptance", body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn confirm(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let request: ConfirmBody = match parse_body(&headers, &body) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    let meta = ctx.meta("public:upsell".into(), &state);
    match uc::confirm(&state.core, &request.acceptance_id, &request.token, &meta).await {
        Ok(_) if is_form(&headers) => see_other(&uc::page_url(&state.core, &request.token)),
        Ok(decision) => Json(AcceptanceView::from(&decision.acceptance)).into_response(),
        Err(err) => refusal(err),
    }
}

/// The `return_url` of an upsell charge: where the gateway sends the shopper back after its own
/// step (3DS, PayPal approval). The payment is read back from the gateway (whatever the query
/// says: Stripe appends `payment_intent` and `redirect_status`, which are not believed) and a
/// short status page answers; the offer page the shopper came from (or its in-page step) polls
/// and moves on by itself.
#[utoipa::path(get, path = "/ocart/v1/upsells/acceptances/{id}/return", tag = "upsells",
    params(("id" = String, Path, description = "The acceptance (`acc_` and 32 hex digits)", pattern = "^acc_[0-9a-f]{32}$")),
    responses(
        (status = 200, description = "The status page", content_type = "text/html", body = String),
        (status = 404, description = "No such acceptance", content_type = "text/html", body = String),
        (status = 503, description = "The gateway or the store is unavailable; retry", body = crate::error::Problem)))]
pub async fn returned(
    State(state): State<AppState>,
    ctx: RequestContext,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let well_formed = id.len() == 36
        && id.starts_with("acc_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let page = |status: StatusCode, title: &str, text: &str| {
        html(
            status,
            format!(
                "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title}</title></head><body><main><h1>{title}</h1><p>{text}</p></main></body></html>"
            ),
        )
    };
    if !well_formed {
        return page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such offer.",
        );
    }
    let meta = ctx.meta("public:upsell".into(), &state);
    match uc::returned(&state.core, &id, &meta).await {
        Ok(status) => {
            let text = match status.shown() {
                "succeeded" => "Thank you: your payment is confirmed. You can close this page.",
                "declined" => "The payment was not taken. You have not been charged for this offer.",
                "requires_action" => "Your bank still needs you to confirm the payment.",
                _ => "Your payment is being processed. This page can be closed; nothing more is needed.",
            };
            page(StatusCode::OK, "Your offer", text)
        }
        Err(uc::UpsellsError::NotFound(_)) => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such offer.",
        ),
        Err(err) => refusal(err),
    }
}

/// A refund to ask for.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    /// Minor units; omitted: what is left of the charge.
    #[serde(default, deserialize_with = "crate::json::whole_opt")]
    pub amount: Option<i64>,
    /// At most 500 characters, without control characters.
    #[serde(default)]
    #[schema(max_length = 500, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub reason: Option<String>,
    /// The client's id for this refund; a retry sends the same one. Omitted: a fresh one.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub refund_id: Option<String>,
}

/// A refund recorded as requested.
#[derive(Debug, Serialize, ToSchema)]
pub struct RefundReply {
    pub refund_id: String,
    /// `requested`: the gateway refund and the store note follow.
    pub status: String,
    pub amount: i64,
}

/// Asks for a refund of (part of) an accepted upsell's own charge.
#[utoipa::path(post, path = "/ocart/v1/upsells/acceptances/{id}/refund", tag = "upsells",
    params(("id" = String, Path, description = "The acceptance id (`acc_…`)")),
    request_body = RefundBody,
    responses(
        (status = 202, body = RefundReply),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 409, description = "The acceptance cannot be refunded (not accepted, too many refunds)", body = crate::error::Problem),
        (status = 422, description = "The amount is above what is left, or the refund id was used with another amount", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn refund(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    caller.require(WRITE)?;
    let request: RefundBody = if body.iter().all(u8::is_ascii_whitespace) {
        RefundBody::default()
    } else {
        crate::json::parse(&body)?
    };
    let meta = ctx.meta(caller.actor(), &state);
    let input = uc::RefundRequest {
        amount: request.amount,
        reason: request.reason,
        refund_id: request.refund_id,
    };
    Ok(match uc::refund(&state.core, &id, input, &meta).await {
        Ok(done) => (
            StatusCode::ACCEPTED,
            Json(RefundReply {
                refund_id: done.refund_id,
                status: "requested".into(),
                amount: done.amount,
            }),
        )
            .into_response(),
        Err(err) => refusal(err),
    })
}

/// The sandbox's 3DS page (only with the sandbox gateway): a button that authenticates.
#[utoipa::path(get, path = "/ocart/v1/sandbox/3ds/{charge_ref}", tag = "upsells",
    params(("charge_ref" = String, Path, description = "The sandbox charge waiting for the shopper"), TokenQuery),
    responses(
        (status = 200, content_type = "text/html", body = String),
        (status = 404, description = "No sandbox gateway", body = crate::error::Problem)))]
pub async fn sandbox_3ds_page(
    State(state): State<AppState>,
    Path(charge_ref): Path<String>,
    Query(query): Query<TokenQuery>,
) -> Response {
    if state.core.gateways.sandbox().is_none() {
        return ApiError::NotFound("the sandbox gateway".into()).into_response();
    }
    let page = sandbox_form(
        &format!(
            "/ocart/v1/sandbox/3ds/{}",
            upsell_page::urlencode(&charge_ref)
        ),
        &[("token", &query.token)],
        "Sandbox 3-D Secure",
        "This is the sandbox's test verification. Nothing real is charged.",
        "Complete verification",
        false,
    );
    html(StatusCode::OK, page)
}

/// A small escaped page with one form of hidden fields.
fn sandbox_form(
    action: &str,
    fields: &[(&str, &str)],
    title: &str,
    message: &str,
    button: &str,
    auto_submit: bool,
) -> String {
    let env = {
        let mut env = minijinja::Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env
    };
    let fields: Vec<_> = fields
        .iter()
        .map(|(name, value)| minijinja::context! { name, value })
        .collect();
    env.render_str(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body style="font-family:sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem">
<h1 style="font-size:1.4rem">{{ title }}</h1><p>{{ message }}</p>
<form method="post" action="{{ action }}" id="f">{% for f in fields %}<input type="hidden" name="{{ f.name }}" value="{{ f.value }}">{% endfor %}
<button type="submit">{{ button }}</button></form>
{% if auto_submit %}<script>document.getElementById('f').submit();</script>{% endif %}
</body></html>"#,
        minijinja::context! { action, fields, title, message, button, auto_submit },
    )
    .unwrap_or_default()
}

/// The sandbox form's answer.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SandboxBody {
    /// The one-click token of the acceptance whose charge this is.
    pub token: String,
}

/// Completes the sandbox's 3DS for the charge, then returns to the confirm route (a form that
/// submits itself; a button without JavaScript).
#[utoipa::path(post, path = "/ocart/v1/sandbox/3ds/{charge_ref}", tag = "upsells",
    params(("charge_ref" = String, Path, description = "The sandbox charge waiting for the shopper")),
    request_body(content((SandboxBody = "application/x-www-form-urlencoded"), (SandboxBody = "application/json"))),
    responses(
        (status = 200, description = "A form posting to the confirm route", content_type = "text/html", body = String),
        (status = 401, body = crate::error::Problem),
        (status = 403, description = "The token's acceptance has another charge", body = crate::error::Problem),
        (status = 404, description = "No sandbox gateway", body = crate::error::Problem)))]
pub async fn sandbox_3ds(
    State(state): State<AppState>,
    Path(charge_ref): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(sandbox) = state.core.gateways.sandbox() else {
        return ApiError::NotFound("the sandbox gateway".into()).into_response();
    };
    let request: SandboxBody = match parse_body(&headers, &body) {
        Ok(request) => request,
        Err(err) => return err.into_response(),
    };
    let claims = match uc::signed_claims(&state.core, &request.token) {
        Ok(claims) => claims,
        Err(err) => return refusal(err),
    };
    let id = uc::acceptance_of(&claims);
    let acceptance = match uc::acceptance(&state.core, &id, Some(&request.token)).await {
        Ok(acceptance) => acceptance,
        Err(err) => return refusal(err),
    };
    if acceptance.charge_ref() != Some(charge_ref.as_str()) {
        return refusal(UpsellsError::TokenForeign("charge"));
    }
    sandbox.authenticate(&charge_ref);
    html(
        StatusCode::OK,
        sandbox_form(
            "/ocart/v1/upsells/confirm",
            &[("acceptance_id", &id), ("token", &request.token)],
            "Verified",
            "Returning to the store…",
            "Continue",
            true,
        ),
    )
}
