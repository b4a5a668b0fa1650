//! Ping, info, the OpenAPI document and Prometheus metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use ocart_domain::token::Capability;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(ping))
        .routes(routes!(info))
        .routes(routes!(openapi))
        .routes(routes!(metrics))
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
    /// This instance's background processors: empty while another instance holds the
    /// processors lease.
    pub processors: Vec<ProcessorInfo>,
}

/// One background processor as its supervisor sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProcessorInfo {
    pub name: String,
    /// starting, running, backing_off or stopped
    pub state: String,
    pub steps: u64,
    pub errors: u64,
    pub panics: u64,
    pub restarts: u64,
    pub consecutive_failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_step_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Version, backend, NATS on/off, how far behind each projection (and the relay) is, and the
/// state of each background processor (errors, panics, restarts, last error).
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
        processors: state
            .core
            .processors
            .snapshot()
            .into_iter()
            .map(|p| ProcessorInfo {
                state: p.state.as_str().to_owned(),
                name: p.name,
                steps: p.steps,
                errors: p.errors,
                panics: p.panics,
                restarts: p.restarts,
                consecutive_failures: p.consecutive_failures,
                last_error: p.last_error,
                last_error_at: p.last_error_at,
                last_step_at: p.last_step_at,
            })
            .collect(),
    }))
}

/// The document the server serves: made once from the routers when the server starts.
#[derive(Clone)]
pub struct Document(pub std::sync::Arc<utoipa::openapi::OpenApi>);

/// The OpenAPI 3.1 document of every route.
#[utoipa::path(get, path = "/ocart/v1/openapi", tag = "system", responses((status = 200, description = "OpenAPI 3.1 JSON")))]
pub async fn openapi(Extension(doc): Extension<Document>) -> impl IntoResponse {
    Json(doc.0.as_ref().clone())
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
