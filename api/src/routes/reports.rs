//! Reports: recovery analytics (`GET /ocart/v1/recovery/analytics?days=7|30|90`, CartBay's
//! Overview cards) and the dashboard (`GET /ocart/v1/reports/dashboard`: orders, average order
//! value, conversion, and the recovery part). Any other `days` falls back to 30, as CartBay's
//! period filter does. The funnel report (`GET /ocart/v1/reports/funnels`, `/{id}`): per funnel
//! and step visits, accepts, declines, revenue and refunds, and orders with and without offers;
//! the dashboard adds the offer and funnel totals of its window.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use ocart_domain::funnel::validate_slug;
use ocart_domain::token::Capability;
use ocart_projections::queries::analytics::{self, OrderSummary, RecoverySummary};
use ocart_projections::queries::funnel_reports::{self, FunnelReportRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Path, Query};
use crate::state::{AppState, RequestContext};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(recovery))
        .routes(routes!(dashboard))
        .routes(routes!(funnel_report))
        .routes(routes!(funnel_report_one))
}

const READ: &[Capability] = &[
    Capability::OcartViewReports,
    Capability::OcartManage,
    Capability::OcartManageRecovery,
];

#[derive(Debug, Deserialize, IntoParams)]
pub struct Period {
    /// 7, 30 or 90; anything else means 30.
    pub days: Option<String>,
}

impl Period {
    fn days(&self) -> i64 {
        match self.days.as_deref().map(str::trim) {
            Some("7") => 7,
            Some("90") => 90,
            _ => 30,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryReport {
    pub days: i64,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    #[serde(flatten)]
    pub summary: RecoverySummary,
}

/// Recovery over the last 7, 30 or 90 days.
#[utoipa::path(get, path = "/ocart/v1/recovery/analytics", tag = "reports", params(Period),
    responses((status = 200, body = RecoveryReport)), security(("bearer" = [])))]
pub async fn recovery(
    State(state): State<AppState>,
    caller: Caller,
    Query(period): Query<Period>,
) -> Result<Json<RecoveryReport>, ApiError> {
    caller.require(READ)?;
    let days = period.days();
    let until = state.core.clock.now();
    let since = until - chrono::Duration::days(days);
    let summary = analytics::recovery_summary(&state.core.db, since, until).await?;
    Ok(Json(RecoveryReport {
        days,
        since,
        until,
        summary,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub days: i64,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub orders: OrderSummary,
    pub recovery: RecoverySummary,
    /// Every offer's facts recorded in the window, added up as `GET /reports/offers` adds one
    /// offer's.
    pub offers: funnel_reports::OfferTotals,
    /// The paid orders placed in the window that are credited to a funnel, with and without
    /// offers (as `GET /reports/funnels` credits them).
    pub funnels: funnel_reports::FunnelOrders,
}

/// Dashboard rollups: orders, average order value, conversion, recovery.
#[utoipa::path(get, path = "/ocart/v1/reports/dashboard", tag = "reports", params(Period),
    responses((status = 200, body = Dashboard)), security(("bearer" = [])))]
pub async fn dashboard(
    State(state): State<AppState>,
    caller: Caller,
    Query(period): Query<Period>,
) -> Result<Json<Dashboard>, ApiError> {
    caller.require(READ)?;
    let days = period.days();
    let until = state.core.clock.now();
    let since = until - chrono::Duration::days(days);
    let db = &state.core.db;
    Ok(Json(Dashboard {
        days,
        since,
        until,
        orders: analytics::order_summary(db, since, until).await?,
        recovery: analytics::recovery_summary(db, since, until).await?,
        offers: funnel_reports::offer_totals(db, since, until).await?,
        funnels: funnel_reports::funnel_totals(db, since, until).await?,
    }))
}

/// Who may read the funnel report: as the offer report.
const FUNNEL_READ: &[Capability] = &[
    Capability::OcartManageOffers,
    Capability::OcartManage,
    Capability::OcartViewReports,
];

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FunnelReportQuery {
    /// Only this funnel (its slug).
    #[param(max_length = 64, pattern = "^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")]
    pub funnel_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FunnelReport {
    pub funnels: Vec<FunnelReportRow>,
}

/// Per funnel and step: visits, accepts, declines, take rate, revenue and refunds; per funnel:
/// paid orders, revenue and average order value, with offers and without, in minor units per
/// currency (averages rounded down).
///
/// Visits are what OCart sees: a bump step's visit is its offer shown to a cart (`bump/shown`,
/// once per cart, counted for every funnel whose bump step it is); an upsell or downsell step's
/// visit is its hosted offer page rendering the offer (`upsell/shown`, once per parent order and
/// step). Checkout, thank-you and custom steps are the store's pages: their `visits` is null.
/// An upsell is accepted when it was charged and written to the store (`upsell/accepted`).
///
/// An order is credited to the first funnel that touched it in the log: a line of one of its
/// bump steps' offers, or one of its upsell steps shown or decided with the order as the parent.
/// Its value is its total plus the funnel's upsells accepted on it; it is "with offers" when it
/// carried one of the funnel's bump lines or one of its upsells was accepted.
#[utoipa::path(get, path = "/ocart/v1/reports/funnels", tag = "reports", params(FunnelReportQuery),
    responses((status = 200, body = FunnelReport), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem),
        (status = 422, description = "An unknown or invalid query parameter", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn funnel_report(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(query): Query<FunnelReportQuery>,
) -> Result<Json<FunnelReport>, ApiError> {
    caller.require(FUNNEL_READ)?;
    if let Some(id) = &query.funnel_id {
        validate_slug("funnel_id", id).map_err(|e| ApiError::Validation(vec![e]))?;
    }
    state
        .read_your_writes("funnel_reports", ctx.min_position)
        .await?;
    let funnels = funnel_reports::funnel_report(&state.core.db, query.funnel_id.as_deref()).await?;
    Ok(Json(FunnelReport { funnels }))
}

/// One funnel's report (as in `GET /reports/funnels`); 404 for a funnel never defined.
#[utoipa::path(get, path = "/ocart/v1/reports/funnels/{id}", tag = "reports",
    params(("id" = String, Path, description = "The funnel's slug", pattern = "^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")),
    responses((status = 200, body = FunnelReportRow), (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn funnel_report_one(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    _query: Query<NoQuery>,
) -> Result<Json<FunnelReportRow>, ApiError> {
    caller.require(FUNNEL_READ)?;
    validate_slug("id", &id).map_err(|e| ApiError::Validation(vec![e]))?;
    state
        .read_your_writes("funnel_reports", ctx.min_position)
        .await?;
    funnel_reports::funnel_report(&state.core.db, Some(&id))
        .await?
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("funnel {id}")))
}

/// No query parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}
