//! `POST /ocart/v1/privacy/erase`: erases one data subject (an email or a phone number).

use axum::extract::State;
use axum::Json;
use ocart_domain::token::Capability;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::{AppState, RequestContext};
use crate::usecases::erase;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(erase))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EraseRequest {
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Why (kept in the log and the audit log).
    #[serde(default)]
    pub reason: Option<String>,
}

/// What the erase body must be: exactly one of `email` or `phone` (the other absent or null),
/// and an optional reason. [`EraseRequest`] is what is parsed; this is what is documented.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum EraseBody {
    ByEmail {
        #[schema(value_type = crate::openapi::EmailAddress)]
        email: String,
        #[serde(default)]
        #[schema(inline, value_type = crate::openapi::Null)]
        phone: (),
        /// Why (kept in the log and the audit log; default "request").
        #[schema(max_length = 500)]
        reason: Option<String>,
    },
    ByPhone {
        #[schema(pattern = "^\\+[1-9][0-9]{7,14}$")]
        phone: String,
        #[serde(default)]
        #[schema(inline, value_type = crate::openapi::Null)]
        email: (),
        #[schema(max_length = 500)]
        reason: Option<String>,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EraseReply {
    /// The subject hash that was erased.
    pub subject: String,
    pub position: Option<i64>,
}

/// Deletes the subject's data key and records the erasure; read tables blank its fields.
#[utoipa::path(post, path = "/ocart/v1/privacy/erase", tag = "privacy", request_body = EraseBody,
    responses((status = 200, body = EraseReply), (status = 422, body = crate::error::Problem)), security(("bearer" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    ctx: RequestContext,
    JsonBody(req): JsonBody<EraseRequest>,
) -> Result<Json<EraseReply>, ApiError> {
    caller.require(&[Capability::OcartManage])?;
    let meta = ctx.meta(caller.actor(), &state);
    let input = erase::Erase {
        email: req.email,
        phone: req.phone,
        reason: req.reason,
    };
    let erased = erase::erase(&state.core, input, &meta).await?;
    Ok(Json(EraseReply {
        subject: erased.subject.to_string(),
        position: erased.position,
    }))
}
