//! Funnels: create, read, change, activate, archive, their steps, and the checkout's resolve.
//! Capability `ocart_manage_funnels` (or `ocart_manage`); reports readers may read. Resolve is
//! public with the checkout's session token, and needs a reader's bearer token with a cart id.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use ocart_domain::token::Capability;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::{AppState, RequestContext};
use crate::usecases::funnels::{
    self as uc, FunnelPatch, FunnelView, NewFunnel, ResolveBy, Resolved, StepBody,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_funnels, create_funnel))
        .routes(routes!(resolve_funnel))
        .routes(routes!(show_funnel, update_funnel, delete_funnel))
        .routes(routes!(activate_funnel))
        .routes(routes!(archive_funnel))
        .routes(routes!(show_steps, replace_steps))
}

const READ: &[Capability] = &[
    Capability::OcartManageFunnels,
    Capability::OcartManage,
    Capability::OcartViewReports,
];
const WRITE: &[Capability] = &[Capability::OcartManageFunnels, Capability::OcartManage];

/// The projection funnel reads wait for.
const PROJECTION: &str = "funnels";

#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelList {
    pub funnels: Vec<FunnelView>,
}

/// A funnel's steps.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepsBody {
    /// By position; the lowest is the entry.
    #[schema(min_items = 1)]
    pub steps: Vec<StepBody>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct FunnelQuery {
    /// draft, active or archived
    #[param(pattern = "^(draft|active|archived)$")]
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ResolveQuery {
    /// The cart (with a bearer token that may read funnels).
    pub cart_id: Option<String>,
    /// The checkout session's token (no bearer token needed).
    #[param(pattern = "^[A-Za-z0-9_-]{16,128}$")]
    pub session_token: Option<String>,
}

/// Waits (bounded) until the funnel tables include `position`, so what this write answers is
/// what the next read (and this instance's next resolve) sees.
async fn projected(state: &AppState, view: FunnelView) -> Result<FunnelView, ApiError> {
    state.read_your_writes(PROJECTION, view.position).await?;
    state.core.funnel_cache.invalidate();
    Ok(view)
}

/// Funnels, oldest first.
#[utoipa::path(get, path = "/ocart/v1/funnels", tag = "funnels", params(FunnelQuery),
    responses((status = 200, body = FunnelList), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list_funnels(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<FunnelQuery>,
) -> Result<Json<FunnelList>, ApiError> {
    caller.require(READ)?;
    state.read_your_writes(PROJECTION, ctx.min_position).await?;
    let funnels = uc::list(&state.core, query.status.as_deref()).await?;
    Ok(Json(FunnelList { funnels }))
}

/// Creates a funnel (a draft unless `status` is `active`); answers it as saved.
#[utoipa::path(post, path = "/ocart/v1/funnels", tag = "funnels", request_body = NewFunnel,
    responses((status = 201, body = FunnelView), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 409, description = "The slug is taken", body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create_funnel(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<FunnelView>), ApiError> {
    caller.require(WRITE)?;
    let request: NewFunnel = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::create(&state.core, request, &meta).await?;
    Ok((StatusCode::CREATED, Json(projected(&state, view).await?)))
}

/// The funnel a cart gets (the active funnel whose trigger rules match it, by priority, else
/// the default funnel), its steps, and the bumps the cart is eligible for. `funnel` is null
/// when none applies. Give `session_token` (public) or `cart_id` (bearer).
#[utoipa::path(get, path = "/ocart/v1/funnels/resolve", tag = "funnels", params(ResolveQuery),
    responses((status = 200, body = Resolved), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security((), ("bearer" = [])))]
pub async fn resolve_funnel(
    State(state): State<AppState>,
    headers: HeaderMap,
    ctx: RequestContext,
    Query(query): Query<ResolveQuery>,
) -> Result<Json<Resolved>, ApiError> {
    // The hot read waits only when the caller names a write to see (`OCart-Position`).
    if ctx.min_position.is_some() {
        state.read_your_writes("carts", ctx.min_position).await?;
        state.read_your_writes(PROJECTION, ctx.min_position).await?;
    }
    let by = match (query.session_token, query.cart_id) {
        (Some(token), None) => ResolveBy::Session(token),
        (None, Some(cart_id)) => {
            let mut parts = axum::http::Request::new(()).into_parts().0;
            parts.headers = headers;
            let caller = <Caller as axum::extract::FromRequestParts<AppState>>::from_request_parts(
                &mut parts, &state,
            )
            .await?;
            caller.require(READ)?;
            ResolveBy::Cart(cart_id)
        }
        _ => {
            return Err(ApiError::validation(
                "cart_id",
                "give session_token or cart_id, one of them",
            ))
        }
    };
    Ok(Json(uc::resolve(&state.core, by).await?))
}

/// One funnel.
#[utoipa::path(get, path = "/ocart/v1/funnels/{id}", tag = "funnels", params(("id" = String, Path, description = "The funnel's slug")),
    responses((status = 200, body = FunnelView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn show_funnel(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<FunnelView>, ApiError> {
    caller.require(READ)?;
    state.read_your_writes(PROJECTION, ctx.min_position).await?;
    Ok(Json(uc::show(&state.core, &id).await?))
}

/// Changes what is given (name, trigger, settings, steps); answers the funnel as saved. An
/// archived funnel is not changed (409).
#[utoipa::path(patch, path = "/ocart/v1/funnels/{id}", tag = "funnels", params(("id" = String, Path, description = "The funnel's slug")), request_body = FunnelPatch,
    responses((status = 200, body = FunnelView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update_funnel(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<FunnelView>, ApiError> {
    caller.require(WRITE)?;
    let request: FunnelPatch = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::update(&state.core, &id, request, &meta).await?;
    Ok(Json(projected(&state, view).await?))
}

/// Archives the funnel (as `POST /funnels/{id}/archive`); answers it.
#[utoipa::path(delete, path = "/ocart/v1/funnels/{id}", tag = "funnels", params(("id" = String, Path, description = "The funnel's slug")),
    responses((status = 200, body = FunnelView), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete_funnel(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<FunnelView>, ApiError> {
    caller.require(WRITE)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::archive(&state.core, &id, &meta).await?;
    Ok(Json(projected(&state, view).await?))
}

/// Activates a draft funnel; an archived one is refused (409).
#[utoipa::path(post, path = "/ocart/v1/funnels/{id}/activate", tag = "funnels", params(("id" = String, Path, description = "The funnel's slug")),
    responses((status = 200, body = FunnelView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn activate_funnel(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<FunnelView>, ApiError> {
    caller.require(WRITE)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::activate(&state.core, &id, &meta).await?;
    Ok(Json(projected(&state, view).await?))
}

/// Archives the funnel, for good; answers it.
#[utoipa::path(post, path = "/ocart/v1/funnels/{id}/archive", tag = "funnels", params(("id" = String, Path, description = "The funnel's slug")),
    responses((status = 200, body = FunnelView), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn archive_funnel(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<FunnelView>, ApiError> {
    caller.require(WRITE)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::archive(&state.core, &id, &meta).await?;
    Ok(Json(projected(&state, view).await?))
}

/// A funnel's steps, by position.
#[utoipa::path(get, path = "/ocart/v1/funnels/{id}/steps", tag = "funnels", params(("id" = String, Path, description = "The funnel's slug")),
    responses((status = 200, body = StepsBody), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn show_steps(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<StepsBody>, ApiError> {
    caller.require(READ)?;
    state.read_your_writes(PROJECTION, ctx.min_position).await?;
    let view = uc::show(&state.core, &id).await?;
    Ok(Json(StepsBody { steps: view.steps }))
}

/// Replaces a funnel's steps; answers the funnel as saved.
#[utoipa::path(put, path = "/ocart/v1/funnels/{id}/steps", tag = "funnels", params(("id" = String, Path, description = "The funnel's slug")), request_body = StepsBody,
    responses((status = 200, body = FunnelView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn replace_steps(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<FunnelView>, ApiError> {
    caller.require(WRITE)?;
    let request: StepsBody = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let patch = FunnelPatch {
        steps: Some(request.steps),
        ..FunnelPatch::default()
    };
    let view = uc::update(&state.core, &id, patch, &meta).await?;
    Ok(Json(projected(&state, view).await?))
}
