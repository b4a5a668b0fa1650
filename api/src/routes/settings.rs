//! `GET`/`PATCH /ocart/v1/settings`.

use axum::extract::State;
use axum::Json;
use ocart_domain::settings::SettingsValues;
use ocart_domain::token::Capability;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{command_error, ApiError};
use crate::json::JsonBody;
use crate::state::{AppState, RequestContext};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(show, update))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SettingsReply {
    #[schema(value_type = Object)]
    pub settings: SettingsValues,
    /// The keys this request changed, `group.key`.
    pub changed: Vec<String>,
    pub position: Option<i64>,
}

/// The settings in force, by group.
#[utoipa::path(get, path = "/ocart/v1/settings", tag = "settings",
    responses((status = 200, body = SettingsReply), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
) -> Result<Json<SettingsReply>, ApiError> {
    caller.require(&[Capability::OcartManage])?;
    state.read_your_writes("settings", ctx.min_position).await?;
    let (settings, _) = ocart_projections::queries::current_settings(&state.core.db).await?;
    Ok(Json(SettingsReply {
        settings,
        changed: Vec::new(),
        position: None,
    }))
}

/// Changes some settings: a partial document such as `{"recovery": {"abandoned_threshold_min": 45}}`.
/// Out-of-range, unknown and mistyped keys are refused by name; nothing is half-applied.
#[utoipa::path(patch, path = "/ocart/v1/settings", tag = "settings", request_body(content = Object),
    responses((status = 200, body = SettingsReply), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(patch): JsonBody<serde_json::Value>,
) -> Result<Json<SettingsReply>, ApiError> {
    caller.require(&[Capability::OcartManage])?;
    let meta = ctx.meta(caller.actor(), &state);
    let outcome = state
        .core
        .update_settings(patch, &meta)
        .await
        .map_err(|e| command_error(e, |e| ApiError::Validation(e.0)))?;
    let changed = outcome
        .events
        .iter()
        .flat_map(|e| {
            let ocart_domain::settings::SettingsEvent::Changed { changes, .. } = &e.event;
            changes.iter().map(|c| c.key.clone())
        })
        .collect();
    Ok(Json(SettingsReply {
        settings: outcome.aggregate.values().clone(),
        changed,
        position: outcome.last_position(),
    }))
}
