//! `POST /ocart/v1/privacy/erase`: erases one data subject (an email or a phone number).

use axum::extract::State;
use axum::Json;
use ocart_domain::subject::SubjectCommand;
use ocart_domain::token::Capability;
use ocart_domain::{Email, Phone};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{command_error, ApiError};
use crate::json::JsonBody;
use crate::state::{AppState, RequestContext};

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
        #[schema(
            max_length = 254,
            pattern = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$"
        )]
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
    let vault = &state.core.vault;
    let subject = match (&req.email, &req.phone) {
        (Some(email), None) => vault.subject_for_email(
            &Email::parse("email", email).map_err(|e| ApiError::Validation(vec![e]))?,
        ),
        (None, Some(phone)) => vault.subject_for_phone(
            &Phone::parse("phone", phone).map_err(|e| ApiError::Validation(vec![e]))?,
        ),
        _ => {
            return Err(ApiError::validation(
                "email",
                "give exactly one of email or phone",
            ))
        }
    };
    let reason = req.reason.unwrap_or_else(|| "request".into());
    if reason.chars().count() > 500 {
        return Err(ApiError::validation(
            "reason",
            "must be at most 500 characters",
        ));
    }
    // One order at every entry point: the erasure is recorded first (the projections blank
    // the read tables), then the key goes before the answer; the eraser process manager
    // deletes it after a crash between the two.
    let meta = ctx.meta(caller.actor(), &state);
    let outcome = state
        .core
        .subjects
        .execute(
            subject.as_str(),
            (
                subject.clone(),
                SubjectCommand::Erase {
                    at: meta.at,
                    reason,
                },
            ),
            &meta,
        )
        .await
        .map_err(|e| command_error(e, |e| ApiError::Internal(e.into())))?;
    vault.erase(&subject).await?;
    Ok(Json(EraseReply {
        subject: subject.to_string(),
        position: outcome.last_position(),
    }))
}
