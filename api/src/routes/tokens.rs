//! API tokens over HTTP: create (shown once), list, revoke.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ocart_domain::token::{Capability, TokenCommand, TokenError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{command_error, ApiError};
use crate::extract::Path;
use crate::json::JsonBody;
use crate::state::{AppState, RequestContext};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    /// 1 to 100 characters, not blank.
    #[schema(max_length = 100, pattern = "\\S")]
    pub name: String,
    /// Capability names, e.g. `ocart_view_reports`; at least one.
    #[schema(min_items = 1, value_type = Vec<CapabilityName>)]
    pub capabilities: Vec<String>,
}

/// A capability a token may hold.
#[derive(ToSchema)]
#[schema(
    pattern = "^(ocart_manage|ocart_manage_funnels|ocart_manage_offers|ocart_manage_recovery|ocart_manage_tests|ocart_view_reports|ocart_run_migration|ocart_view_personal_data)$"
)]
pub struct CapabilityName(#[allow(dead_code)] String);

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    pub token_id: String,
    /// The bearer secret. Shown once; only its hash is kept.
    pub token: String,
    pub position: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub token_id: String,
    pub name: String,
    pub capabilities: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Parses capability names, naming any unknown one.
pub fn parse_capabilities(field: &str, names: &[String]) -> Result<Vec<Capability>, ApiError> {
    let mut caps = Vec::new();
    let mut errors = Vec::new();
    for (i, name) in names.iter().enumerate() {
        match Capability::parse(name) {
            Some(cap) => caps.push(cap),
            None => errors.push(ocart_domain::FieldError::new(
                format!("{field}[{i}]"),
                format!("{name:?} is not a capability"),
            )),
        }
    }
    if caps.is_empty() && errors.is_empty() {
        errors.push(ocart_domain::FieldError::new(
            field,
            "must name at least one capability",
        ));
    }
    if errors.is_empty() {
        Ok(caps)
    } else {
        Err(ApiError::Validation(errors))
    }
}

fn token_rejection(e: TokenError) -> ApiError {
    match e {
        TokenError::NotFound => ApiError::NotFound("token".into()),
        TokenError::BadName => ApiError::validation("name", e.to_string()),
        TokenError::NoCapability => ApiError::validation("capabilities", e.to_string()),
        TokenError::AlreadyExists => ApiError::Conflict(e.to_string()),
    }
}

/// Creates a token; the secret is in this reply only.
#[utoipa::path(post, path = "/ocart/v1/tokens", tag = "tokens", request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(req): JsonBody<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    caller.require(&[Capability::OcartManage])?;
    let caps = parse_capabilities("capabilities", &req.capabilities)?;
    let meta = ctx.meta(caller.actor(), &state);
    let created = state
        .core
        .create_token(&req.name, caps, &meta)
        .await
        .map_err(
            |e| match e.downcast::<ocart_projections::CommandError<TokenError>>() {
                Ok(err) => command_error(err, token_rejection),
                Err(other) => ApiError::Internal(other),
            },
        )?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token_id: created.token_id,
            token: created.secret,
            position: created.position,
        }),
    ))
}

/// Every token (never the secrets).
#[utoipa::path(get, path = "/ocart/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenInfo>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    caller.require(&[Capability::OcartManage])?;
    state
        .read_your_writes("api_tokens", ctx.min_position)
        .await?;
    let rows = ocart_projections::queries::list_tokens(&state.core.db).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| TokenInfo {
                token_id: r.token_id,
                name: r.name,
                capabilities: r
                    .capabilities
                    .0
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect(),
                created_at: r.created_at,
                revoked_at: r.revoked_at,
            })
            .collect(),
    ))
}

/// Revokes a token: from the next request on it is refused with 401.
#[utoipa::path(delete, path = "/ocart/v1/tokens/{id}", tag = "tokens", params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = crate::routes::carts::CommandReply), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<crate::routes::carts::CommandReply>, ApiError> {
    caller.require(&[Capability::OcartManage])?;
    let meta = ctx.meta(caller.actor(), &state);
    let outcome = state
        .core
        .tokens
        .execute(&id, TokenCommand::Revoke { at: meta.at }, &meta)
        .await
        .map_err(|e| command_error(e, token_rejection))?;
    Ok(Json(crate::routes::carts::CommandReply {
        id,
        status: "revoked".into(),
        position: outcome.last_position(),
    }))
}
