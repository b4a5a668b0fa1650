//! Offers: order bumps (`/ocart/v1/bumps`) and upsells and downsells (`/ocart/v1/upsells`) —
//! list, create, read, update (a JSON merge patch), archive (DELETE) — with capability
//! `ocart_manage_offers` (or `ocart_manage`; reports readers may read); the checkout's bump
//! endpoints (`GET /bumps/eligible`, `POST /bumps/{id}/accept`, `POST /bumps/{id}/decline`),
//! public with the checkout's session token (or a bearer token and a `cart_id`) and limited
//! per client IP (`rate_limit.bump_requests`); and the offer report (`GET /reports/offers`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ocart_domain::offer::BumpAnswer;
use ocart_domain::token::Capability;
use ocart_projections::queries::offers::{self as q, OfferReportRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::ratelimit::Bucket;
use crate::state::{AppState, RequestContext};
use crate::usecases::bumps::{self, CartRef, EligibleBump, OrderLine};
use crate::usecases::offers::{self as usecase, Family, OfferView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_bumps, create_bump))
        .routes(routes!(eligible_bumps))
        .routes(routes!(show_bump, update_bump, archive_bump))
        .routes(routes!(accept_bump))
        .routes(routes!(decline_bump))
        .routes(routes!(list_upsells, create_upsell))
        .routes(routes!(show_upsell, update_upsell, archive_upsell))
        .routes(routes!(offer_report))
}

const READ: &[Capability] = &[
    Capability::OcartManageOffers,
    Capability::OcartManage,
    Capability::OcartViewReports,
];
const WRITE: &[Capability] = &[Capability::OcartManageOffers, Capability::OcartManage];

/// An offer's definition (documentation of what `OfferDefinition::parse` takes). On PATCH
/// every field is optional and merges into the saved definition (RFC 7386: `null` removes).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OfferBody {
    /// `bump` under `/bumps` (the default there); `upsell` (the default) or `downsell` under
    /// `/upsells`.
    #[schema(pattern = "^(bump|upsell|downsell)$")]
    kind: Option<String>,
    /// 1 to 200 characters, not blank.
    #[schema(max_length = 200, pattern = "\\S")]
    name: String,
    /// ISO 4217 code of every amount of the offer.
    #[schema(
        pattern = "^(AED|AFN|ALL|AMD|ANG|AOA|ARS|AUD|AWG|AZN|BAM|BBD|BDT|BGN|BHD|BIF|BMD|BND|BOB|BRL|BSD|BTN|BWP|BYN|BZD|CAD|CDF|CHF|CLP|CNY|COP|CRC|CUP|CVE|CZK|DJF|DKK|DOP|DZD|EGP|ERN|ETB|EUR|FJD|FKP|GBP|GEL|GHS|GIP|GMD|GNF|GTQ|GYD|HKD|HNL|HTG|HUF|IDR|ILS|INR|IQD|IRR|ISK|JMD|JOD|JPY|KES|KGS|KHR|KMF|KPW|KRW|KWD|KYD|KZT|LAK|LBP|LKR|LRD|LSL|LYD|MAD|MDL|MGA|MKD|MMK|MNT|MOP|MRU|MUR|MVR|MWK|MXN|MYR|MZN|NAD|NGN|NIO|NOK|NPR|NZD|OMR|PAB|PEN|PGK|PHP|PKR|PLN|PYG|QAR|RON|RSD|RUB|RWF|SAR|SBD|SCR|SDG|SEK|SGD|SHP|SLE|SOS|SRD|SSP|STN|SVC|SYP|SZL|THB|TJS|TMT|TND|TOP|TRY|TTD|TWD|TZS|UAH|UGX|USD|UYU|UZS|VES|VND|VUV|WST|XAF|XCD|XCG|XOF|XPF|YER|ZAR|ZMW|ZWG)$"
    )]
    currency: String,
    product: OfferProductBody,
    #[schema(value_type = OfferPricingBody)]
    pricing: Value,
    /// Which carts the offer targets: `{"all"|"any"|"none": [rules]}`, `{"cart_min_total":
    /// minor units}`, `{"product_in_cart": id}`, `{"category_in_cart": slug}`; groups nest at
    /// most 4 deep, 100 rules in all. Default every cart.
    #[schema(value_type = Option<crate::openapi::Targeting>)]
    targeting: Option<Value>,
    display: Option<OfferDisplayBody>,
    /// Upsells and downsells only: a minijinja HTML template overriding the hosted offer page,
    /// at most 65536 bytes.
    #[schema(max_length = 65536)]
    page_template: Option<String>,
}

/// Changes to an offer: merged into the saved definition (RFC 7386: a field given replaces
/// it, `null` removes an optional one); the fields are [`OfferBody`]'s, each optional.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OfferPatchBody {
    #[schema(pattern = "^(bump|upsell|downsell)$")]
    kind: Option<String>,
    /// 1 to 200 characters, not blank.
    #[schema(required = false, max_length = 200, pattern = "\\S")]
    name: String,
    /// ISO 4217 code of every amount of the offer.
    #[schema(
        required = false,
        pattern = "^(AED|AFN|ALL|AMD|ANG|AOA|ARS|AUD|AWG|AZN|BAM|BBD|BDT|BGN|BHD|BIF|BMD|BND|BOB|BRL|BSD|BTN|BWP|BYN|BZD|CAD|CDF|CHF|CLP|CNY|COP|CRC|CUP|CVE|CZK|DJF|DKK|DOP|DZD|EGP|ERN|ETB|EUR|FJD|FKP|GBP|GEL|GHS|GIP|GMD|GNF|GTQ|GYD|HKD|HNL|HTG|HUF|IDR|ILS|INR|IQD|IRR|ISK|JMD|JOD|JPY|KES|KGS|KHR|KMF|KPW|KRW|KWD|KYD|KZT|LAK|LBP|LKR|LRD|LSL|LYD|MAD|MDL|MGA|MKD|MMK|MNT|MOP|MRU|MUR|MVR|MWK|MXN|MYR|MZN|NAD|NGN|NIO|NOK|NPR|NZD|OMR|PAB|PEN|PGK|PHP|PKR|PLN|PYG|QAR|RON|RSD|RUB|RWF|SAR|SBD|SCR|SDG|SEK|SGD|SHP|SLE|SOS|SRD|SSP|STN|SVC|SYP|SZL|THB|TJS|TMT|TND|TOP|TRY|TTD|TWD|TZS|UAH|UGX|USD|UYU|UZS|VES|VND|VUV|WST|XAF|XCD|XCG|XOF|XPF|YER|ZAR|ZMW|ZWG)$"
    )]
    currency: String,
    #[schema(required = false)]
    product: OfferProductBody,
    #[schema(required = false, value_type = OfferPricingBody)]
    pricing: Value,
    #[schema(value_type = Option<crate::openapi::Targeting>)]
    targeting: Option<Value>,
    display: Option<OfferDisplayBody>,
    #[schema(max_length = 65536)]
    page_template: Option<String>,
}

/// The product an offer adds.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OfferProductBody {
    /// A non-negative integer, or a string of 1 to 100 characters.
    #[schema(value_type = crate::routes::capture::ProductIdBody)]
    product_id: Value,
    /// 1 to 200 characters.
    #[schema(max_length = 200, pattern = "\\S")]
    name: String,
    /// Its regular price in minor units (required for `discount_pct`).
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    price: Option<i64>,
    /// 1 to 999 (default 1).
    #[schema(minimum = 1, maximum = 999)]
    quantity: Option<u32>,
}

/// How an offer is priced, by `type`. Bumps: `fixed_addon` (`amount`), `percent_addon`
/// (`value`, of the cart's subtotal), `free_gift` (`cart_min_total`). Upsells and downsells:
/// `price` (`amount`), `discount_pct` (`value`, off the product's price). Amounts are minor
/// units from 0 to 10¹¹; a percentage is a decimal string or number from 0 to 100 with at most
/// two decimals.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OfferPricingBody {
    #[schema(pattern = "^(fixed_addon|percent_addon|free_gift|price|discount_pct)$")]
    r#type: String,
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    amount: Option<i64>,
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    cart_min_total: Option<i64>,
    /// `"12.5"` or `12.5`.
    #[schema(value_type = Option<String>, pattern = "^(100(\\.0{1,2})?|[0-9]{1,2}(\\.[0-9]{1,2})?)$")]
    value: Option<Value>,
}

/// How an offer is shown.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct OfferDisplayBody {
    /// Bumps: where the checkout shows it (default `above_payment`).
    #[schema(pattern = "^(above_payment|in_shipping|in_summary)$")]
    position: Option<String>,
    #[schema(max_length = 200)]
    headline: Option<String>,
    #[schema(max_length = 2000)]
    copy: Option<String>,
    /// An http(s) URL, at most 2048 characters.
    #[schema(max_length = 2048, pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/]\\S*$")]
    image_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfferList {
    pub offers: Vec<OfferView>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Include archived offers (default false).
    pub include_archived: Option<bool>,
}

async fn list(
    state: &AppState,
    caller: &Caller,
    ctx: &RequestContext,
    family: Family,
    query: &ListQuery,
) -> Result<Json<OfferList>, ApiError> {
    caller.require(READ)?;
    state.read_your_writes("offers", ctx.min_position).await?;
    let rows = q::list_offers(
        &state.core.db,
        family.kinds(),
        query.include_archived.unwrap_or(false),
    )
    .await?;
    Ok(Json(OfferList {
        offers: rows.into_iter().map(OfferView::of_row).collect(),
    }))
}

async fn create(
    state: &AppState,
    caller: &Caller,
    ctx: &RequestContext,
    family: Family,
    body: &[u8],
) -> Result<(StatusCode, Json<OfferView>), ApiError> {
    caller.require(WRITE)?;
    let body: Value = crate::json::parse(body)?;
    let meta = ctx.meta(caller.actor(), state);
    let view = usecase::create(&state.core, family, &body, &meta).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn show(
    state: &AppState,
    caller: &Caller,
    ctx: &RequestContext,
    family: Family,
    id: &str,
) -> Result<Json<OfferView>, ApiError> {
    caller.require(READ)?;
    state.read_your_writes("offers", ctx.min_position).await?;
    q::get_offer(&state.core.db, id)
        .await?
        .filter(|row| family.holds(&row.kind))
        .map(|row| Json(OfferView::of_row(row)))
        .ok_or_else(|| ApiError::NotFound(format!("{} {id}", family.noun())))
}

async fn update(
    state: &AppState,
    caller: &Caller,
    ctx: &RequestContext,
    family: Family,
    id: &str,
    body: &[u8],
) -> Result<Json<OfferView>, ApiError> {
    caller.require(WRITE)?;
    let patch: Value = crate::json::parse(body)?;
    let meta = ctx.meta(caller.actor(), state);
    Ok(Json(
        usecase::update(&state.core, family, id, &patch, &meta).await?,
    ))
}

async fn archive(
    state: &AppState,
    caller: &Caller,
    ctx: &RequestContext,
    family: Family,
    id: &str,
) -> Result<Json<OfferView>, ApiError> {
    caller.require(WRITE)?;
    let meta = ctx.meta(caller.actor(), state);
    Ok(Json(
        usecase::archive(&state.core, family, id, &meta).await?,
    ))
}

/// Order bumps, oldest first.
#[utoipa::path(get, path = "/ocart/v1/bumps", tag = "offers", params(ListQuery),
    responses((status = 200, body = OfferList), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list_bumps(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<ListQuery>,
) -> Result<Json<OfferList>, ApiError> {
    list(&state, &caller, &ctx, Family::Bumps, &query).await
}

/// Creates an order bump; answers it as saved.
#[utoipa::path(post, path = "/ocart/v1/bumps", tag = "offers", request_body = OfferBody,
    responses((status = 201, body = OfferView), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 422, description = "Invalid fields, each named (`pricing.type`, `pricing.value`, …)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create_bump(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<OfferView>), ApiError> {
    create(&state, &caller, &ctx, Family::Bumps, &body).await
}

/// One order bump (archived ones too, with their status).
#[utoipa::path(get, path = "/ocart/v1/bumps/{id}", tag = "offers", params(("id" = String, Path, description = "Offer id")),
    responses((status = 200, body = OfferView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn show_bump(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<OfferView>, ApiError> {
    show(&state, &caller, &ctx, Family::Bumps, &id).await
}

/// Changes what is given (a JSON merge patch over the saved definition); answers the bump as
/// saved.
#[utoipa::path(patch, path = "/ocart/v1/bumps/{id}", tag = "offers", params(("id" = String, Path, description = "Offer id")), request_body = OfferPatchBody,
    responses((status = 200, body = OfferView), (status = 404, body = crate::error::Problem), (status = 409, description = "The bump is archived", body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update_bump(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<OfferView>, ApiError> {
    update(&state, &caller, &ctx, Family::Bumps, &id, &body).await
}

/// Archives an order bump: no cart is offered it any more.
#[utoipa::path(delete, path = "/ocart/v1/bumps/{id}", tag = "offers", params(("id" = String, Path, description = "Offer id")),
    responses((status = 200, body = OfferView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn archive_bump(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<OfferView>, ApiError> {
    archive(&state, &caller, &ctx, Family::Bumps, &id).await
}

/// Upsells and downsells, oldest first.
#[utoipa::path(get, path = "/ocart/v1/upsells", tag = "offers", params(ListQuery),
    responses((status = 200, body = OfferList), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list_upsells(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<ListQuery>,
) -> Result<Json<OfferList>, ApiError> {
    list(&state, &caller, &ctx, Family::Upsells, &query).await
}

/// Creates an upsell or downsell; answers it as saved.
#[utoipa::path(post, path = "/ocart/v1/upsells", tag = "offers", request_body = OfferBody,
    responses((status = 201, body = OfferView), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 422, description = "Invalid fields, each named", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create_upsell(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<OfferView>), ApiError> {
    create(&state, &caller, &ctx, Family::Upsells, &body).await
}

/// One upsell or downsell.
#[utoipa::path(get, path = "/ocart/v1/upsells/{id}", tag = "offers", params(("id" = String, Path, description = "Offer id")),
    responses((status = 200, body = OfferView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn show_upsell(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<OfferView>, ApiError> {
    show(&state, &caller, &ctx, Family::Upsells, &id).await
}

/// Changes what is given (a JSON merge patch); answers the offer as saved. An upsell may
/// become a downsell and back, not a bump.
#[utoipa::path(patch, path = "/ocart/v1/upsells/{id}", tag = "offers", params(("id" = String, Path, description = "Offer id")), request_body = OfferPatchBody,
    responses((status = 200, body = OfferView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update_upsell(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<OfferView>, ApiError> {
    update(&state, &caller, &ctx, Family::Upsells, &id, &body).await
}

/// Archives an upsell or downsell.
#[utoipa::path(delete, path = "/ocart/v1/upsells/{id}", tag = "offers", params(("id" = String, Path, description = "Offer id")),
    responses((status = 200, body = OfferView), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn archive_upsell(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<OfferView>, ApiError> {
    archive(&state, &caller, &ctx, Family::Upsells, &id).await
}

/// Which cart: the checkout's session token (public), or a cart id with a bearer token.
#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CartParams {
    /// The checkout's session token, as sent to capture.
    #[param(pattern = "^[A-Za-z0-9_-]{16,128}$")]
    #[schema(pattern = "^[A-Za-z0-9_-]{16,128}$")]
    pub session_token: Option<String>,
    /// A cart id (needs a bearer token with `ocart_manage_offers` or `ocart_manage`).
    #[param(max_length = 100)]
    #[schema(max_length = 100)]
    pub cart_id: Option<String>,
}

/// The cart a request names; a cart id needs a caller allowed to manage offers. A request
/// with a session token counts against the client IP's bump budget.
fn cart_ref(
    state: &AppState,
    ctx: &RequestContext,
    caller: Result<Caller, ApiError>,
    params: CartParams,
) -> Result<CartRef, ApiError> {
    if params.session_token.is_some() || caller.is_err() {
        state
            .limiter
            .check(Bucket::Bump, ctx.ip)
            .map_err(ApiError::RateLimited)?;
    }
    if params.cart_id.is_some() {
        caller?.require(WRITE)?;
    }
    Ok(CartRef::one_of(params.session_token, params.cart_id)?)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EligibleBumps {
    pub bumps: Vec<EligibleBump>,
}

/// The active bumps this cart is eligible for (targeting, currency and pricing), each with
/// its price for the cart; each is recorded as shown (once per offer and cart).
#[utoipa::path(get, path = "/ocart/v1/bumps/eligible", tag = "offers", params(CartParams),
    responses((status = 200, body = EligibleBumps), (status = 404, description = "No such cart", body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)),
    security((), ("bearer" = [])))]
pub async fn eligible_bumps(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ctx: RequestContext,
    Query(params): Query<CartParams>,
) -> Result<Json<EligibleBumps>, ApiError> {
    let cart = cart_ref(&state, &ctx, caller, params)?;
    state.read_your_writes("carts", ctx.min_position).await?;
    let meta = ctx.meta("checkout".into(), &state);
    let bumps = bumps::show(&state.core, &cart, &meta).await?;
    Ok(Json(EligibleBumps { bumps }))
}

/// What the store adds to (or removes from) the order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BumpDecisionView {
    /// accepted or declined
    pub answer: String,
    pub line: OrderLine,
    /// Global position of the event written; null when the answer repeated one recorded.
    pub position: Option<i64>,
}

async fn decide(
    state: AppState,
    caller: Result<Caller, ApiError>,
    ctx: RequestContext,
    id: String,
    body: axum::body::Bytes,
    answer: BumpAnswer,
) -> Result<Json<BumpDecisionView>, ApiError> {
    let params: CartParams = crate::json::parse(&body)?;
    let cart = cart_ref(&state, &ctx, caller, params)?;
    state.read_your_writes("carts", ctx.min_position).await?;
    let meta = ctx.meta("checkout".into(), &state);
    let decided = bumps::decide(&state.core, &id, &cart, answer, &meta).await?;
    Ok(Json(BumpDecisionView {
        answer: match decided.answer {
            BumpAnswer::Accepted => "accepted",
            BumpAnswer::Declined => "declined",
        }
        .into(),
        line: decided.line,
        position: decided.position,
    }))
}

/// The shopper takes the bump: answers the line to add to the order (its meta
/// `_ocart_offer_id` counts its revenue once the order is paid). Accepting again answers the
/// same line and records nothing.
#[utoipa::path(post, path = "/ocart/v1/bumps/{id}/accept", tag = "offers", params(("id" = String, Path, description = "Offer id")), request_body = CartParams,
    responses((status = 200, body = BumpDecisionView), (status = 404, body = crate::error::Problem), (status = 409, description = "The bump does not apply to this cart", body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)),
    security((), ("bearer" = [])))]
pub async fn accept_bump(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<BumpDecisionView>, ApiError> {
    decide(state, caller, ctx, id, body, BumpAnswer::Accepted).await
}

/// The shopper declines (or removes) the bump: answers the line to remove.
#[utoipa::path(post, path = "/ocart/v1/bumps/{id}/decline", tag = "offers", params(("id" = String, Path, description = "Offer id")), request_body = CartParams,
    responses((status = 200, body = BumpDecisionView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem), (status = 429, body = crate::error::Problem)),
    security((), ("bearer" = [])))]
pub async fn decline_bump(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<BumpDecisionView>, ApiError> {
    decide(state, caller, ctx, id, body, BumpAnswer::Declined).await
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ReportQuery {
    /// Only this offer.
    #[param(max_length = 100)]
    pub offer_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfferReport {
    pub offers: Vec<OfferReportRow>,
}

/// Per offer: shown, accepted, declined, take rate (accepted / shown; null when never shown),
/// revenue and refunds in minor units per currency.
#[utoipa::path(get, path = "/ocart/v1/reports/offers", tag = "reports", params(ReportQuery),
    responses((status = 200, body = OfferReport), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn offer_report(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<ReportQuery>,
) -> Result<Json<OfferReport>, ApiError> {
    caller.require(READ)?;
    if query
        .offer_id
        .as_deref()
        .is_some_and(|id| id.chars().count() > 100)
    {
        return Err(ApiError::validation("offer_id", "at most 100 characters"));
    }
    state.read_your_writes("offers", ctx.min_position).await?;
    let offers = q::offer_report(&state.core.db, query.offer_id.as_deref()).await?;
    Ok(Json(OfferReport { offers }))
}
