//! Query and path extractors whose failures are problem documents naming the parameter, and
//! the last line of defence: a layer that turns any other plain-text or empty error answer
//! (axum's own rejections, 405, a body over the limit, a timeout) into a problem document.

use std::error::Error as _;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `axum::extract::Query`, refused as a 422 problem naming the parameter.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(query_rejection)
    }
}

/// A query string that does not fit: the parameter and what is wrong with it. The inner error
/// reads `param: message` (serde_path_to_error) or, for a missing parameter, "missing field
/// `param`".
fn query_rejection(rejection: QueryRejection) -> ApiError {
    let text = rejection
        .source()
        .map(ToString::to_string)
        .unwrap_or_else(|| rejection.body_text());
    field_error(&text, "query")
}

/// Splits `param: message` into a field error; `fallback` names the field otherwise.
fn field_error(text: &str, fallback: &str) -> ApiError {
    let is_path = |p: &str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '[' | ']'))
    };
    if let Some(name) = text
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        return ApiError::validation(name, "is required");
    }
    match text.split_once(": ") {
        Some((path, message)) if is_path(path) => ApiError::validation(path, message),
        _ => ApiError::validation(fallback, text),
    }
}

/// `axum::extract::Path`, refused as a problem naming the path parameter.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(path_rejection)
    }
}

fn path_rejection(rejection: PathRejection) -> ApiError {
    use axum::extract::path::ErrorKind;
    match rejection {
        PathRejection::FailedToDeserializePathParams(err) => match err.into_kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => {
                ApiError::validation(key, "is not valid UTF-8 once percent-decoded")
            }
            ErrorKind::ParseErrorAtKey {
                key, expected_type, ..
            } => ApiError::validation(key, format!("must be a valid {expected_type}")),
            ErrorKind::DeserializeError { key, message, .. } => ApiError::validation(key, message),
            ErrorKind::ParseError { expected_type, .. }
            | ErrorKind::ParseErrorAtIndex { expected_type, .. } => {
                ApiError::validation("path", format!("must be a valid {expected_type}"))
            }
            other => ApiError::BadRequest(format!("the URL path does not fit: {other}")),
        },
        other => ApiError::BadRequest(other.body_text()),
    }
}

/// The most of a plain-text error body carried into the problem's detail.
const MAX_DETAIL: usize = 2048;

/// Layer: an error answer (4xx/5xx) that is not already a problem document and carries no
/// page of its own (HTML, images) becomes one, keeping its status and headers (`Allow`,
/// `Retry-After`, …).
pub async fn problem_documents(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !(content_type.is_empty() || content_type.starts_with("text/plain")) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_DETAIL * 2).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let error = rejection_error(status, text);
    let problem = error.problem();
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key(header::RETRY_AFTER)
    {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    let mut response = Response::from_parts(parts, Body::from(body));
    *response.status_mut() = status;
    response
}

/// The problem an HTTP-layer error answer stands for.
fn rejection_error(status: StatusCode, text: String) -> ApiError {
    let detail = |fallback: &str| {
        if text.is_empty() {
            fallback.to_owned()
        } else {
            text.chars().take(MAX_DETAIL).collect()
        }
    };
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::Http(
            status,
            "the request body is larger than this endpoint accepts".into(),
        ),
        StatusCode::BAD_REQUEST => ApiError::BadRequest(detail("the request is malformed")),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::Http(
            status,
            "this method is not allowed on this path; see the Allow header".into(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::Http(
            status,
            detail("the request's Content-Type is not accepted here"),
        ),
        StatusCode::UNPROCESSABLE_ENTITY => {
            ApiError::Http(status, detail("the request is invalid"))
        }
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => {
            ApiError::Http(status, detail("the request took too long; retry shortly"))
        }
        _ => ApiError::Http(
            status,
            detail(status.canonical_reason().unwrap_or("the request failed")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: &ApiError) -> (String, String) {
        match err {
            ApiError::Validation(errors) => (errors[0].field.clone(), errors[0].message.clone()),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let rows = [
            (
                "a wrong value names its parameter",
                "limit: invalid digit found in string",
                "limit",
            ),
            (
                "a missing parameter is named",
                "missing field `recipient`",
                "recipient",
            ),
            (
                "a message without a parameter falls back to `query`",
                "something odd: happened here",
                "query",
            ),
        ];
        for (rule, text, field) in rows {
            assert_eq!(field_of(&field_error(text, "query")).0, field, "{rule}");
        }
    }
}
