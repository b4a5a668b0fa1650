//! Cart reads and the admin actions `wp ocart cart` offers.

use axum::extract::State;
use axum::Json;
use ocart_domain::cart::{CartCommand, CartError};
use ocart_domain::token::Capability;
use ocart_projections::queries::{self, CartFilter, CartRow};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{command_error, ApiError};
use crate::extract::{Path, Query};
use crate::state::{AppState, RequestContext};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(abandon))
        .routes(routes!(convert))
}

const READ: &[Capability] = &[
    Capability::OcartViewReports,
    Capability::OcartManage,
    Capability::OcartManageRecovery,
];
const WRITE: &[Capability] = &[Capability::OcartManage];

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// active, abandoned, converted or expired
    #[param(pattern = "^(active|abandoned|converted|expired)$")]
    pub status: Option<String>,
    /// RFC 3339 time, or a relative age such as `24h`, `7d`, `30m`.
    #[param(
        pattern = "^([0-9]{1,7}[smhd]|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$"
    )]
    pub since: Option<String>,
    /// 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[0-9]{1,16}\\.([0-9a-f]{2})*$")]
    pub cursor: Option<String>,
    pub min_position: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CartPage {
    pub carts: Vec<CartRow>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Carts, newest activity first, with keyset pagination.
#[utoipa::path(get, path = "/ocart/v1/carts", tag = "carts", params(ListQuery),
    responses((status = 200, body = CartPage), (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Query(q): Query<ListQuery>,
) -> Result<Json<CartPage>, ApiError> {
    caller.require(READ)?;
    let mut errors = Vec::new();
    if let Some(status) = &q.status {
        if !["active", "abandoned", "converted", "expired"].contains(&status.as_str()) {
            errors.push(ocart_domain::FieldError::new(
                "status",
                "must be active, abandoned, converted or expired",
            ));
        }
    }
    let since = match &q.since {
        Some(raw) => match crate::params::parse_since(raw, state.core.clock.now()) {
            Some(at) => Some(at),
            None => {
                errors.push(ocart_domain::FieldError::new(
                    "since",
                    "must be an RFC 3339 time or an age such as 24h, 7d, 30m",
                ));
                None
            }
        },
        None => None,
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        errors.push(ocart_domain::FieldError::new(
            "limit",
            "must be between 1 and 200",
        ));
    }
    let after = match &q.cursor {
        Some(raw) => match super::keyset::decode(raw) {
            Some(after) => Some(after),
            None => {
                errors.push(ocart_domain::FieldError::new(
                    "cursor",
                    "is not a cursor this API issued",
                ));
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    state
        .read_your_writes("carts", ctx.min_position.or(q.min_position))
        .await?;
    let carts = queries::list_carts(
        &state.core.db,
        &CartFilter {
            status: q.status,
            since,
            after,
            limit: limit + 1,
        },
    )
    .await?;
    let mut carts = carts;
    let next_cursor = if carts.len() as i64 > limit {
        carts.truncate(limit as usize);
        carts
            .last()
            .map(|row| super::keyset::encode(row.updated_at, &row.cart_id))
    } else {
        None
    };
    for row in &mut carts {
        caller.redact_cart(row);
    }
    Ok(Json(CartPage { carts, next_cursor }))
}

/// One cart.
#[utoipa::path(get, path = "/ocart/v1/carts/{id}", tag = "carts", params(("id" = String, Path, description = "Cart id")),
    responses((status = 200, body = CartRow), (status = 404, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<CartRow>, ApiError> {
    caller.require(READ)?;
    state.read_your_writes("carts", ctx.min_position).await?;
    let mut row = queries::get_cart(&state.core.db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("cart {id}")))?;
    caller.redact_cart(&mut row);
    Ok(Json(row))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CommandReply {
    pub id: String,
    pub status: String,
    /// Global position of the last event written (send as `OCart-Position` to read it back).
    pub position: Option<i64>,
}

/// Runs an admin command on a cart and replies with its new status and position.
async fn cart_command(
    state: &AppState,
    id: String,
    command: CartCommand,
    meta: &ocart_projections::CommandMeta,
) -> Result<Json<CommandReply>, ApiError> {
    let outcome = state
        .core
        .carts
        .execute(&id, command, meta)
        .await
        .map_err(|e| command_error(e, cart_rejection))?;
    Ok(Json(CommandReply {
        id,
        status: outcome.aggregate.status().as_str().into(),
        position: outcome.last_position(),
    }))
}

fn cart_rejection(e: CartError) -> ApiError {
    match e {
        CartError::NotFound => ApiError::NotFound("cart".into()),
        other => ApiError::Conflict(other.to_string()),
    }
}

/// Marks an active cart abandoned now, whatever its inactivity.
#[utoipa::path(post, path = "/ocart/v1/carts/{id}/abandon", tag = "carts", params(("id" = String, Path, description = "Cart id")),
    responses((status = 200, body = CommandReply), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn abandon(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> Result<Json<CommandReply>, ApiError> {
    caller.require(WRITE)?;
    let settings = state.core.settings().await?;
    let meta = ctx.meta(caller.actor(), &state);
    let command = CartCommand::MarkAbandoned {
        at: meta.at,
        threshold_min: settings.recovery.abandoned_threshold_min,
        forced: true,
    };
    cart_command(&state, id, command, &meta).await
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct ConvertRequest {
    #[schema(max_length = 100)]
    pub order_id: Option<String>,
    /// Order revenue in minor units.
    #[serde(default, deserialize_with = "crate::json::whole_opt")]
    #[schema(minimum = 0)]
    pub revenue: Option<i64>,
}

/// Marks a cart converted (an order was placed).
#[utoipa::path(post, path = "/ocart/v1/carts/{id}/convert", tag = "carts", params(("id" = String, Path, description = "Cart id")), request_body = Option<ConvertRequest>,
    responses((status = 200, body = CommandReply), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn convert(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<CommandReply>, ApiError> {
    caller.require(WRITE)?;
    // The body is optional: none, or `null`, is the empty request.
    let request: ConvertRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ConvertRequest::default()
    } else {
        crate::json::parse::<Option<ConvertRequest>>(&body)?.unwrap_or_default()
    };
    let meta = ctx.meta(caller.actor(), &state);
    let input = crate::usecases::convert::ConvertCart {
        cart_id: id,
        order_id: request.order_id,
        revenue: request.revenue,
    };
    let converted = crate::usecases::convert::convert(&state.core, input, &meta).await?;
    Ok(Json(CommandReply {
        id: converted.cart_id,
        status: converted.status.as_str().into(),
        position: converted.position,
    }))
}
