//! `GET /ocart/v1/audit`: the audit log of admin actions, newest first.

use axum::extract::State;
use axum::Json;
use ocart_domain::token::Capability;
use ocart_projections::queries::AuditRow;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::{AppState, RequestContext};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    /// 1 to 500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    pub min_position: Option<i64>,
}

/// Every admin action with actor, object, diff, IP and time.
#[utoipa::path(get, path = "/ocart/v1/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditRow>), (status = 403, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRow>>, ApiError> {
    caller.require(&[Capability::OcartManage])?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::validation("limit", "must be between 1 and 500"));
    }
    state
        .read_your_writes("audit_log", ctx.min_position.or(q.min_position))
        .await?;
    Ok(Json(
        ocart_projections::queries::list_audit(&state.core.db, limit).await?,
    ))
}
