//! One error type for the API. Every error leaves as an RFC 9457 problem document; internal
//! details are logged, never returned.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ocart_domain::FieldError;
use ocart_projections::CommandError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request has invalid fields")]
    Validation(Vec<FieldError>),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("a valid bearer token is required")]
    Unauthorized,
    /// A signed delivery (webhook) whose signature is missing or wrong.
    #[error("{0}")]
    BadSignature(String),
    #[error("this token lacks the capability {0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests; retry after {0} seconds")]
    RateLimited(u64),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
    /// An answer of the HTTP layer itself (405, 413, 415, a timeout, …) as a problem document.
    #[error("{1}")]
    Http(StatusCode, String),
}

/// RFC 9457 problem details, with OCart's extension members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The fields that failed validation (422 only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemField>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemField {
    /// JSON path of the field, e.g. `items[2].quantity`.
    pub field: String,
    pub message: String,
}

impl ApiError {
    pub fn status_code(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized | Self::BadSignature(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Http(status, _) => *status,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed-json",
            Self::BadRequest(_) => "bad-request",
            Self::Validation(_) => "validation",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::Unauthorized => "unauthorized",
            Self::BadSignature(_) => "bad-signature",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::Conflict(_) => "conflict",
            Self::RateLimited(_) => "rate-limited",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
            Self::Http(status, _) => match *status {
                StatusCode::BAD_REQUEST => "bad-request",
                StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
                StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
                StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media-type",
                StatusCode::UNPROCESSABLE_ENTITY => "validation",
                StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                s if s.is_server_error() => "internal",
                _ => "http",
            },
        }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }

    /// The problem document this error becomes.
    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let detail = match self {
            Self::Validation(errors) => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            Self::Internal(_) => {
                "the server failed to handle the request; it has been logged".into()
            }
            other => other.to_string(),
        };
        Problem {
            kind: format!("https://ocart.dev/problems/{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors: match self {
                Self::Validation(errors) => errors
                    .iter()
                    .map(|e| ProblemField {
                        field: e.field.clone(),
                        message: e.message.clone(),
                    })
                    .collect(),
                _ => Vec::new(),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(err) => tracing::error!(error = ?err, "request failed"),
            Self::Unavailable(msg) => tracing::warn!(%msg, "service unavailable"),
            _ => {}
        }
        let status = self.status_code();
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match &self {
            Self::RateLimited(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Self::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => {
                Self::Unavailable("the database is unavailable; retry shortly".into())
            }
            other => Self::Internal(other.into()),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        Self::Internal(err)
    }
}

impl From<ocart_projections::VaultError> for ApiError {
    fn from(err: ocart_projections::VaultError) -> Self {
        Self::Internal(err.into())
    }
}

/// Maps a command failure: rejections by the aggregate through `rejected`, a lost race → 409,
/// an unavailable log → 503.
pub fn command_error<E: std::error::Error + Send + Sync + 'static>(
    err: CommandError<E>,
    rejected: impl FnOnce(E) -> ApiError,
) -> ApiError {
    match err {
        CommandError::Rejected(e) => rejected(e),
        CommandError::Conflict(what) => ApiError::Conflict(format!(
            "the {what} was changed by concurrent requests; retry"
        )),
        CommandError::Unavailable(msg) => ApiError::Unavailable(msg),
        CommandError::Corrupt(msg) => ApiError::Internal(anyhow::anyhow!(msg)),
    }
}

// The use cases' errors, each mapped here once (`crate::usecases`).

impl From<crate::usecases::StoreFailure> for ApiError {
    fn from(err: crate::usecases::StoreFailure) -> Self {
        use crate::usecases::StoreFailure;
        match err {
            StoreFailure::Conflict(_) => Self::Conflict(err.to_string()),
            StoreFailure::Unavailable(msg) => Self::Unavailable(msg),
            StoreFailure::Corrupt(msg) => Self::Internal(anyhow::anyhow!(msg)),
        }
    }
}

impl From<crate::usecases::convert::ConvertError> for ApiError {
    fn from(err: crate::usecases::convert::ConvertError) -> Self {
        use crate::usecases::convert::ConvertError;
        match err {
            ConvertError::Invalid(errors) => Self::Validation(errors),
            ConvertError::CartNotFound(id) => Self::NotFound(format!("cart {id}")),
            ConvertError::Closed(why) | ConvertError::OrderConflict(why) => Self::Conflict(why),
            ConvertError::Store(failure) => failure.into(),
            ConvertError::Internal(err) => Self::Internal(err),
        }
    }
}

// offers
impl From<crate::usecases::offers::OffersError> for ApiError {
    fn from(err: crate::usecases::offers::OffersError) -> Self {
        use crate::usecases::offers::OffersError;
        match err {
            OffersError::Invalid(errors) => Self::Validation(errors),
            OffersError::NotFound => Self::NotFound("offer".into()),
            OffersError::Conflict(why) => Self::Conflict(why),
            OffersError::Store(failure) => failure.into(),
            OffersError::Internal(err) => Self::Internal(err),
        }
    }
}
// bumps
impl From<crate::usecases::bumps::BumpsError> for ApiError {
    fn from(err: crate::usecases::bumps::BumpsError) -> Self {
        use crate::usecases::bumps::BumpsError;
        match err {
            BumpsError::Invalid(errors) => Self::Validation(errors),
            BumpsError::CartNotFound => Self::NotFound("cart".into()),
            BumpsError::OfferNotFound => Self::NotFound("bump".into()),
            BumpsError::NotEligible => Self::Conflict(err.to_string()),
            BumpsError::Store(failure) => failure.into(),
            BumpsError::Internal(err) => Self::Internal(err),
        }
    }
}

// Each use case's error → problem document, one block per use case, in this order:
// capture
impl From<crate::usecases::capture::CaptureError> for ApiError {
    fn from(err: crate::usecases::capture::CaptureError) -> Self {
        use crate::usecases::capture::CaptureError;
        match err {
            CaptureError::Invalid(errors) => Self::Validation(errors),
            CaptureError::Closed(why) => Self::Conflict(why),
            CaptureError::Store(failure) => failure.into(),
            CaptureError::Internal(err) => Self::Internal(err),
        }
    }
}
// erase
impl From<crate::usecases::erase::EraseError> for ApiError {
    fn from(err: crate::usecases::erase::EraseError) -> Self {
        use crate::usecases::erase::EraseError;
        match err {
            EraseError::Invalid(errors) => Self::Validation(errors),
            EraseError::Store(failure) => failure.into(),
            EraseError::Internal(err) => Self::Internal(err),
        }
    }
}
// abtests
impl From<crate::usecases::abtests::TestsError> for ApiError {
    fn from(err: crate::usecases::abtests::TestsError) -> Self {
        use crate::usecases::abtests::TestsError;
        match err {
            TestsError::Invalid(errors) => Self::Validation(errors),
            TestsError::NotFound(_) => Self::NotFound(err.to_string()),
            TestsError::Conflict(why) => Self::Conflict(why),
            TestsError::Store(failure) => failure.into(),
            TestsError::Internal(err) => Self::Internal(err),
        }
    }
}
// funnels
impl From<crate::usecases::funnels::FunnelsError> for ApiError {
    fn from(err: crate::usecases::funnels::FunnelsError) -> Self {
        use crate::usecases::funnels::FunnelsError;
        match err {
            FunnelsError::Invalid(errors) => Self::Validation(errors),
            FunnelsError::NotFound(_) | FunnelsError::CartNotFound(_) => {
                Self::NotFound(err.to_string())
            }
            FunnelsError::SlugTaken(_) | FunnelsError::Archived(_) => {
                Self::Conflict(err.to_string())
            }
            FunnelsError::Store(failure) => failure.into(),
            FunnelsError::Internal(err) => Self::Internal(err),
        }
    }
}
// record_order
impl From<crate::usecases::record_order::RecordOrderError> for ApiError {
    fn from(err: crate::usecases::record_order::RecordOrderError) -> Self {
        use crate::usecases::record_order::RecordOrderError;
        match err {
            RecordOrderError::Invalid(errors) => Self::Validation(errors),
            RecordOrderError::Conflict(why) => Self::Conflict(why),
            RecordOrderError::Store(failure) => failure.into(),
            RecordOrderError::Internal(err) => Self::Internal(err),
        }
    }
}
// report_delivery
impl From<crate::usecases::report_delivery::ReportDeliveryError> for ApiError {
    fn from(err: crate::usecases::report_delivery::ReportDeliveryError) -> Self {
        use crate::usecases::report_delivery::ReportDeliveryError;
        match err {
            ReportDeliveryError::Store(failure) => failure.into(),
            ReportDeliveryError::Internal(err) => Self::Internal(err),
        }
    }
}
// restore
impl From<crate::usecases::restore::RestoreError> for ApiError {
    fn from(err: crate::usecases::restore::RestoreError) -> Self {
        use crate::usecases::restore::RestoreError;
        match err {
            RestoreError::Store(failure) => failure.into(),
            RestoreError::Internal(err) => Self::Internal(err),
        }
    }
}
// payment_webhook
impl From<crate::usecases::payment_webhook::PaymentWebhookError> for ApiError {
    fn from(err: crate::usecases::payment_webhook::PaymentWebhookError) -> Self {
        use crate::usecases::payment_webhook::PaymentWebhookError;
        match err {
            PaymentWebhookError::NotConfigured
            | PaymentWebhookError::NotConfiguredFor(..)
            | PaymentWebhookError::Unverifiable(_) => Self::Unavailable(err.to_string()),
            PaymentWebhookError::BadSignature(why) => Self::BadSignature(why),
            PaymentWebhookError::Malformed(why) => {
                Self::BadRequest(format!("the event cannot be read: {why}"))
            }
            PaymentWebhookError::Store(failure) => failure.into(),
            PaymentWebhookError::Internal(err) => Self::Internal(err),
        }
    }
}
// suppress
impl From<crate::usecases::suppress::SuppressError> for ApiError {
    fn from(err: crate::usecases::suppress::SuppressError) -> Self {
        use crate::usecases::suppress::SuppressError;
        match err {
            SuppressError::Invalid(errors) => Self::Validation(errors),
            SuppressError::NotSuppressed => {
                Self::NotFound("a suppression of this recipient".into())
            }
            SuppressError::Store(failure) => failure.into(),
            SuppressError::Internal(err) => Self::Internal(err),
        }
    }
}
// test_trigger
impl From<crate::usecases::test_trigger::TestTriggerError> for ApiError {
    fn from(err: crate::usecases::test_trigger::TestTriggerError) -> Self {
        use crate::usecases::test_trigger::TestTriggerError;
        match err {
            TestTriggerError::Invalid(errors) => Self::Validation(errors),
            TestTriggerError::TestModeOff | TestTriggerError::NoSequence => {
                Self::Conflict(err.to_string())
            }
            TestTriggerError::Store(failure) => failure.into(),
            TestTriggerError::Internal(err) => Self::Internal(err),
        }
    }
}
// unsubscribe
impl From<crate::usecases::unsubscribe::UnsubscribeError> for ApiError {
    fn from(err: crate::usecases::unsubscribe::UnsubscribeError) -> Self {
        use crate::usecases::unsubscribe::UnsubscribeError;
        match err {
            UnsubscribeError::Store(failure) => failure.into(),
            UnsubscribeError::Internal(err) => Self::Internal(err),
        }
    }
}
// upsells (the routes answer the token, decision and idempotency refusals with their own
// problem types, `routes::upsells::problem`; this is the plain mapping)
impl From<crate::usecases::upsells::UpsellsError> for ApiError {
    fn from(err: crate::usecases::upsells::UpsellsError) -> Self {
        use crate::usecases::upsells::UpsellsError;
        match err {
            UpsellsError::Invalid(errors) => Self::Validation(errors),
            UpsellsError::NotFound(what) => Self::NotFound(what),
            UpsellsError::TokenInvalid => Self::Http(StatusCode::UNAUTHORIZED, err.to_string()),
            UpsellsError::TokenExpired => Self::Http(StatusCode::GONE, err.to_string()),
            UpsellsError::TokenForeign(_) => Self::Http(StatusCode::FORBIDDEN, err.to_string()),
            UpsellsError::Ineligible(_) | UpsellsError::KeyReused => {
                Self::Http(StatusCode::UNPROCESSABLE_ENTITY, err.to_string())
            }
            UpsellsError::Decided { .. }
            | UpsellsError::Unpaid(_)
            | UpsellsError::NoPayment(_)
            | UpsellsError::InFlight
            | UpsellsError::Refused(_) => Self::Conflict(err.to_string()),
            UpsellsError::Store(failure) => failure.into(),
            UpsellsError::Internal(err) => Self::Internal(err),
        }
    }
}
