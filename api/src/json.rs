//! A JSON body extractor whose every failure is a problem document naming the field.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The most a JSON body may weigh (every route but those that say otherwise with
/// [`with_body_limit`]).
pub const MAX_BODY: usize = 64 * 1024;

/// `router`'s routes accept bodies of up to `max` bytes, and a larger one is answered with a
/// problem document (413) naming that limit. Layered inside the application's own limit, it
/// overrides it for these routes.
pub fn with_body_limit<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    max: usize,
) -> axum::Router<S> {
    router
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| too_large_as_problem(max, req, next),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(max))
}

/// [`with_body_limit`] for a documented router: its routes and their documentation kept.
pub fn documented_with_body_limit<S: Clone + Send + Sync + 'static>(
    router: utoipa_axum::router::OpenApiRouter<S>,
    max: usize,
) -> utoipa_axum::router::OpenApiRouter<S> {
    let (router, doc) = router.split_for_parts();
    utoipa_axum::router::OpenApiRouter::with_openapi(doc).merge(with_body_limit(router, max).into())
}

/// Turns axum's plain-text 413 (a body over the limit, refused while it was read) into the
/// problem document every error is.
pub async fn too_large_as_problem(
    max: usize,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let response = next.run(req).await;
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE && !is_problem {
        return ApiError::PayloadTooLarge(max).into_response();
    }
    response
}

pub struct JsonBody<T>(pub T);

/// Parses `bytes` as JSON into `T`: syntax errors are 400, wrong or missing fields are 422 with
/// the JSON path of the field.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is a JSON object (or, where the body is optional, null); serde would
    // otherwise read a top-level array positionally into a struct (`[null]` as `{}`).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::validation(
            "body",
            "must be a JSON object, not an array",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if matches!(
            inner.classify(),
            serde_json::error::Category::Syntax
                | serde_json::error::Category::Eof
                | serde_json::error::Category::Io
        ) {
            return ApiError::MalformedJson(inner.to_string());
        }
        let message = inner.to_string();
        // serde_json appends " at line L column C"; the path says where.
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        let path = if path == "." { String::new() } else { path };
        // "missing field `email`" is reported at the parent; name the field itself.
        let field = match message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            Some(name) if path.is_empty() => name.to_owned(),
            Some(name) => format!("{path}.{name}"),
            None if path.is_empty() => "body".to_owned(),
            None => path,
        };
        ApiError::validation(field, message)
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if !content_type.is_empty()
            && !content_type.starts_with("application/json")
            && !content_type.starts_with("text/plain")
        {
            return Err(ApiError::Http(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type must be application/json, not {content_type}"),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(MAX_BODY)
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        if bytes.len() > MAX_BODY {
            return Err(ApiError::PayloadTooLarge(MAX_BODY));
        }
        parse(&bytes).map(JsonBody)
    }
}
