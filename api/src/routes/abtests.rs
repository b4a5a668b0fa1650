//! A/B tests: create, read, change, delete, start and stop them, their results and their
//! planned sample size. Capability `ocart_manage_tests` (or `ocart_manage`); the results and
//! the sample size are readable with `ocart_view_reports` too. The handlers only translate:
//! the checks, the statistics and the errors are `usecases::abtests`, which `ocart test`
//! calls too. An id of any shape that names no test is a 404; a path id that is not valid
//! UTF-8 once percent-decoded is, as on every route, a 422 naming `id`.

use axum::extract::State;
use axum::http::StatusCode;
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
use crate::usecases::abtests::{
    self as uc, NewTest, TestPatchBody, TestResults, TestSampleSize, TestView,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tests, create_test))
        .routes(routes!(show_test, update_test, delete_test))
        .routes(routes!(start_test))
        .routes(routes!(stop_test))
        .routes(routes!(test_results))
        .routes(routes!(test_sample_size))
}

/// Who manages tests.
const MANAGE: &[Capability] = &[Capability::OcartManageTests, Capability::OcartManage];
/// Who reads a test's results and sample size.
const REPORTS: &[Capability] = &[
    Capability::OcartManageTests,
    Capability::OcartManage,
    Capability::OcartViewReports,
];

/// The projection test reads wait for.
const PROJECTION: &str = "abtests";

/// The tests, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TestList {
    pub tests: Vec<TestView>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct TestQuery {
    /// draft, running, stopped or concluded
    #[param(pattern = "^(draft|running|stopped|concluded)$")]
    pub status: Option<String>,
    /// checkout, bump, upsell, recovery_email or recovery_sms
    #[param(pattern = "^(checkout|bump|upsell|recovery_email|recovery_sms)$")]
    pub surface: Option<String>,
}

/// Waits (bounded) until the test tables include `position`, so what this write answers is
/// what the next read sees.
async fn projected(state: &AppState, view: TestView) -> Result<TestView, ApiError> {
    state.read_your_writes(PROJECTION, view.position).await?;
    Ok(view)
}

/// A/B tests, oldest first (those in `status`, on `surface`).
#[utoipa::path(get, path = "/ocart/v1/tests", tag = "tests", params(TestQuery),
    responses((status = 200, body = TestList), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list_tests(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<TestQuery>,
) -> Result<Json<TestList>, ApiError> {
    caller.require(MANAGE)?;
    state.read_your_writes(PROJECTION, ctx.min_position).await?;
    let tests = uc::list(
        &state.core,
        query.status.as_deref(),
        query.surface.as_deref(),
    )
    .await?;
    Ok(Json(TestList { tests }))
}

/// Creates a test, a draft, under a new id; `method`, `mde_relative`, `power_target` and
/// `significance` default to the settings `tests.*`. Answers it as saved. Besides what the
/// schema states, variant keys are unique and each variant serves what its surface serves (a
/// funnel slug or a layout on `checkout`): each refused with a 422 naming the field.
#[utoipa::path(post, path = "/ocart/v1/tests", tag = "tests", request_body = NewTest,
    responses((status = 201, body = TestView), (status = 400, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 422, description = "A field that does not fit, named (`variants[1].serves`)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create_test(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<TestView>), ApiError> {
    caller.require(MANAGE)?;
    let request: NewTest = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::create(&state.core, request, &meta).await?;
    Ok((StatusCode::CREATED, Json(projected(&state, view).await?)))
}

/// One test.
#[utoipa::path(get, path = "/ocart/v1/tests/{id}", tag = "tests", params(("id" = String, Path, description = "The test's id")),
    responses((status = 200, body = TestView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn show_test(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<TestView>, ApiError> {
    caller.require(MANAGE)?;
    state.read_your_writes(PROJECTION, ctx.min_position).await?;
    Ok(Json(uc::show(&state.core, &id).await?))
}

/// Changes what is given; answers the test as saved. A running or stopped test takes only a
/// new name, a concluded one nothing (409, naming the status).
#[utoipa::path(patch, path = "/ocart/v1/tests/{id}", tag = "tests", params(("id" = String, Path, description = "The test's id")), request_body = TestPatchBody,
    responses((status = 200, body = TestView), (status = 404, body = crate::error::Problem), (status = 409, description = "The test has started: its plan stays", body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update_test(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<TestView>, ApiError> {
    caller.require(MANAGE)?;
    let request: TestPatchBody = crate::json::parse(&body)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::update(&state.core, &id, request, &meta).await?;
    Ok(Json(projected(&state, view).await?))
}

/// Deletes a test that is not running, with its assignments and totals (a running one is
/// refused: 409).
#[utoipa::path(delete, path = "/ocart/v1/tests/{id}", tag = "tests", params(("id" = String, Path, description = "The test's id")),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::error::Problem), (status = 409, description = "The test is running", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete_test(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(MANAGE)?;
    let meta = ctx.meta(caller.actor(), &state);
    let position = uc::delete(&state.core, &id, &meta).await?;
    state.read_your_writes(PROJECTION, position).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Starts a draft or stopped test (a running one stays so; a concluded one is refused: 409).
/// One test runs in a place at a time: on `checkout` per target (a funnel, or every cart
/// without one), on `bump` and `upsell` per target offer (without a target, per the offer
/// the control serves); starting a second there is refused (409, naming the running test).
/// Two starts at the same instant can both pass that check: then the first by id (the earlier
/// created) applies and the other gets no traffic there. Recovery tests are exempt: each
/// sequence step names its test.
#[utoipa::path(post, path = "/ocart/v1/tests/{id}/start", tag = "tests", params(("id" = String, Path, description = "The test's id")),
    responses((status = 200, body = TestView), (status = 404, body = crate::error::Problem), (status = 409, description = "The test is concluded, or another test runs in its place (named)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn start_test(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<TestView>, ApiError> {
    caller.require(MANAGE)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::start(&state.core, &id, &meta).await?;
    Ok(Json(projected(&state, view).await?))
}

/// Stops a running test (a stopped one stays so; a draft or concluded one is refused: 409).
#[utoipa::path(post, path = "/ocart/v1/tests/{id}/stop", tag = "tests", params(("id" = String, Path, description = "The test's id")),
    responses((status = 200, body = TestView), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn stop_test(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<TestView>, ApiError> {
    caller.require(MANAGE)?;
    let meta = ctx.meta(caller.actor(), &state);
    let view = uc::stop(&state.core, &id, &meta).await?;
    Ok(Json(projected(&state, view).await?))
}

/// The test's results now, computed as `POST /stats/compare` computes them on its counts (at
/// its significance, against its weights): per variant the visitors, conversions, rate with
/// its Wilson interval, revenue and revenue per visitor, probability to be best and (bandits)
/// allocation; each variant against the control; the sample-ratio-mismatch test with its
/// alert (p-value below `tests.srm_threshold`); and what the conclusion rules say of the
/// counts now. A test without visitors answers zeros, and null for what does not exist yet.
/// Revenues are in minor units of `currency`, the one the conversions were in (never
/// converted); when they came in several, `currency` is null and `mixed_currencies` true.
#[utoipa::path(get, path = "/ocart/v1/tests/{id}/results", tag = "tests", params(("id" = String, Path, description = "The test's id")),
    responses((status = 200, body = TestResults), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn test_results(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<TestResults>, ApiError> {
    caller.require(REPORTS)?;
    state.read_your_writes(PROJECTION, ctx.min_position).await?;
    Ok(Json(uc::results(&state.core, &id).await?))
}

/// Visitors the test needs per variant for its plan (`mde_relative`, `power_target`,
/// `significance`; Fleiss, as `GET /stats/sample-size`) and its baseline: the test's
/// `baseline_rate`, else the control's observed rate. Without either (no conversion yet), or
/// when baseline × (1 + mde_relative) is not below 1, a 422 naming the field.
#[utoipa::path(get, path = "/ocart/v1/tests/{id}/sample-size", tag = "tests", params(("id" = String, Path, description = "The test's id")),
    responses((status = 200, body = TestSampleSize), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 422, description = "No baseline yet, or none the plan fits", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn test_sample_size(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<TestSampleSize>, ApiError> {
    caller.require(REPORTS)?;
    state.read_your_writes(PROJECTION, ctx.min_position).await?;
    Ok(Json(uc::sample_size(&state.core, &id).await?))
}
