//! Reports: recovery analytics (`GET /ocart/v1/recovery/analytics?days=7|30|90`, CartBay's
//! Overview cards) and the dashboard (`GET /ocart/v1/reports/dashboard`: orders, average order
//! value, conversion, and the recovery part). Any other `days` falls back to 30, as CartBay's
//! period filter does.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use ocart_domain::token::Capability;
use ocart_projections::queries::analytics::{self, OrderSummary, RecoverySummary};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(recovery))
        .routes(routes!(dashboard))
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
    }))
}
