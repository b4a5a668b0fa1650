//! Ping, info, the OpenAPI document and Prometheus metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use ocart_domain::token::Capability;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ocart/v1/ping", get(ping))
        .route("/ocart/v1/info", get(info))
        .route("/ocart/v1/openapi", get(openapi))
        .route("/metrics", get(metrics))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Pong {
    pub ok: bool,
}

/// Liveness.
#[utoipa::path(get, path = "/ocart/v1/ping", tag = "system", responses((status = 200, body = Pong)))]
pub async fn ping() -> Json<Pong> {
    Json(Pong { ok: true })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectionInfo {
    pub name: String,
    pub position: i64,
    /// Events in the log the projection has not applied yet.
    pub lag: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Info {
    pub version: String,
    /// postgres or sqlite
    pub backend: String,
    pub nats: bool,
    pub events: i64,
    pub head: i64,
    pub projections: Vec<ProjectionInfo>,
}

/// Version, backend, NATS on/off and how far behind each projection (and the relay) is.
#[utoipa::path(get, path = "/ocart/v1/info", tag = "system", responses((status = 200, body = Info)), security(("bearer" = [])))]
pub async fn info(State(state): State<AppState>, caller: Caller) -> Result<Json<Info>, ApiError> {
    caller.require(&[Capability::OcartManage, Capability::OcartViewReports])?;
    let db = &state.core.db;
    let (events, head) = state.core.log.stats().await?;
    let mut projections = Vec::new();
    let stored: std::collections::HashMap<String, ocart_projections::Checkpoint> =
        ocart_projections::queries::checkpoints(db)
            .await?
            .into_iter()
            .collect();
    let mut names: Vec<String> = state
        .core
        .projectors()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    if state.nats_enabled {
        names.push("nats_relay".into());
    }
    for name in names {
        let at = stored.get(&name).copied().unwrap_or_default();
        let lag = ocart_projections::queries::lag_after(db, at).await?;
        projections.push(ProjectionInfo {
            name,
            position: at.position,
            lag,
        });
    }
    Ok(Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        backend: state.core.db.backend().as_str().into(),
        nats: state.nats_enabled,
        events,
        head,
        projections,
    }))
}

/// The OpenAPI 3.1 document of every route.
#[utoipa::path(get, path = "/ocart/v1/openapi", tag = "system", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::ApiDoc::openapi())
}

/// Prometheus metrics: requests by route and status with latency, events appended, lag.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    if let Ok(checkpoints) = ocart_projections::queries::checkpoints(&state.core.db).await {
        for (name, at) in checkpoints {
            if let Ok(lag) = ocart_projections::queries::lag_after(&state.core.db, at).await {
                metrics::gauge!("ocart_projection_lag_events", "projection" => name)
                    .set(lag as f64);
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
