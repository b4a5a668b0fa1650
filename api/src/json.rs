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

/// An integer type a JSON body's integer field may be read as (see [`Whole`]).
pub trait WholeNumber: Sized {
    const MIN: i128;
    const MAX: i128;
    fn from_i128(n: i128) -> Option<Self>;
}

macro_rules! whole_number {
    ($($t:ty),*) => {$(
        impl WholeNumber for $t {
            const MIN: i128 = <$t>::MIN as i128;
            const MAX: i128 = <$t>::MAX as i128;
            fn from_i128(n: i128) -> Option<Self> {
                <$t>::try_from(n).ok()
            }
        }
    )*};
}

whole_number!(i8, i16, i32, i64, u8, u16, u32, u64);

/// An integer as JSON Schema counts one: a JSON number with no fractional part, written `39`
/// or `39.0` (or `3.9e1`), within the range of `T`. serde reads `39.0` as a float and refuses
/// it for an integer field; the document's `type: integer` promises it is accepted. A
/// fractional or out-of-range number, or any other JSON type, is refused with a message that
/// says so (never a panic). Use it on a field with
/// `#[serde(deserialize_with = "crate::json::whole")]`, or [`whole_opt`] for an `Option`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole<T>(pub T);

impl<'de, T: WholeNumber> serde::Deserialize<'de> for Whole<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<T>(std::marker::PhantomData<T>);

        impl<T: WholeNumber> Visitor<T> {
            fn in_range<E: serde::de::Error>(
                n: i128,
                shown: &dyn std::fmt::Display,
            ) -> Result<T, E> {
                T::from_i128(n).ok_or_else(|| {
                    E::custom(format!(
                        "must be an integer from {} to {}, got {shown}",
                        T::MIN,
                        T::MAX
                    ))
                })
            }
        }

        impl<T: WholeNumber> serde::de::Visitor<'_> for Visitor<T> {
            type Value = Whole<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer")
            }

            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Whole<T>, E> {
                Self::in_range(n.into(), &n).map(Whole)
            }

            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Whole<T>, E> {
                Self::in_range(n.into(), &n).map(Whole)
            }

            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Whole<T>, E> {
                if !n.is_finite() || n.fract() != 0.0 {
                    return Err(E::custom(format!("must be a whole number, got {n}")));
                }
                // 2^127: below it, a whole f64 converts to i128 exactly (`as` would saturate
                // above it, so the range check must come first).
                const LIMIT: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;
                if n.abs() >= LIMIT {
                    return Err(E::custom(format!(
                        "must be an integer from {} to {}, got {n}",
                        T::MIN,
                        T::MAX
                    )));
                }
                Self::in_range(n as i128, &n).map(Whole)
            }
        }

        deserializer.deserialize_any(Visitor(std::marker::PhantomData))
    }
}

/// `#[serde(deserialize_with = "crate::json::whole")]`: an integer field read as [`Whole`].
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: WholeNumber,
{
    <Whole<T> as serde::Deserialize>::deserialize(deserializer).map(|w| w.0)
}

/// `#[serde(default, deserialize_with = "crate::json::whole_opt")]`: an optional integer field
/// (absent or `null` is `None`) read as [`Whole`].
pub fn whole_opt<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: WholeNumber,
{
    <Option<Whole<T>> as serde::Deserialize>::deserialize(deserializer).map(|w| w.map(|w| w.0))
}

/// `#[serde(deserialize_with = "crate::json::with_whole_numbers")]`, for a field of a type
/// this crate does not define (a domain value with integers inside, such as a step's
/// `Discount` or a `ProductId`): its JSON is read, every whole number in it written as `39.0`
/// becomes `39` (as [`Whole`] reads it), and the type is read from that. Errors inside it
/// name their place (`amount: …`).
pub fn with_whole_numbers<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::de::Error as _;
    let mut value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
    integral_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            D::Error::custom(inner)
        } else {
            D::Error::custom(format!("{path}: {inner}"))
        }
    })
}

/// Every number in `value` with no fractional part that fits an `i64` (or, when positive, a
/// `u64`), made an integer: `39.0` becomes `39`. Others (`39.5`, `1e300`) stay as they are.
pub fn integral_floats_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if !f.is_finite()
                || f.fract() != 0.0
                || f.abs() >= 170_141_183_460_469_231_731_687_303_715_884_105_728.0
            {
                return;
            }
            let whole = f as i128;
            if let Ok(i) = i64::try_from(whole) {
                *value = Value::from(i);
            } else if let Ok(u) = u64::try_from(whole) {
                *value = Value::from(u);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "whole")]
        n: i64,
        #[serde(default, deserialize_with = "whole_opt")]
        small: Option<u32>,
    }

    /// The field and message a refused body names, or the value it was read as.
    fn read(json: &str) -> Result<(i64, Option<u32>), (String, String)> {
        match parse::<Body>(json.as_bytes()) {
            Ok(body) => Ok((body.n, body.small)),
            Err(ApiError::Validation(errors)) => {
                Err((errors[0].field.clone(), errors[0].message.clone()))
            }
            Err(other) => panic!("{json}: not a field error: {other:?}"),
        }
    }

    #[test]
    fn integer_fields_take_whole_numbers_however_written() {
        let max_as_float = format!("{:.1}", i64::MAX as f64); // 2^63: one past i64::MAX
        let rows: &[(&str, String, Result<i64, &str>)] = &[
            ("an integer", "39".into(), Ok(39)),
            ("an integral float", "39.0".into(), Ok(39)),
            ("an exponent", "3.9e1".into(), Ok(39)),
            ("negative zero", "-0.0".into(), Ok(0)),
            ("a negative integral float", "-7.0".into(), Ok(-7)),
            (
                "i64::MIN as a float",
                "-9223372036854775808.0".into(),
                Ok(i64::MIN),
            ),
            (
                "a fraction is refused",
                "39.5".into(),
                Err("must be a whole number, got 39.5"),
            ),
            (
                "a huge float is refused",
                "1e300".into(),
                Err("must be an integer from"),
            ),
            (
                "i64::MAX as a float (2^63) is refused",
                max_as_float,
                Err("must be an integer from"),
            ),
            (
                "past i64 as an integer is refused",
                "9223372036854775808".into(),
                Err("must be an integer from"),
            ),
            (
                "a string of digits is refused",
                "\"39\"".into(),
                Err("invalid type: string \"39\", expected an integer"),
            ),
            ("null is refused", "null".into(), Err("expected an integer")),
        ];
        for (rule, n, want) in rows {
            let got = read(&format!("{{\"n\": {n}}}"));
            match (want, got) {
                (Ok(want), Ok((got, _))) => assert_eq!(got, *want, "{rule}"),
                (Err(want), Err((field, message))) => {
                    assert_eq!(field, "n", "{rule}");
                    assert!(message.contains(want), "{rule}: {message}");
                }
                (want, got) => panic!("{rule}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn optional_and_narrow_integer_fields_check_their_own_range() {
        assert_eq!(read(r#"{"n": 1}"#), Ok((1, None)), "absent is None");
        assert_eq!(
            read(r#"{"n": 1, "small": null}"#),
            Ok((1, None)),
            "null is None"
        );
        assert_eq!(read(r#"{"n": 1, "small": 45.0}"#), Ok((1, Some(45))));
        let rows = [
            ("a negative number for a u32", "-1"),
            ("a negative integral float for a u32", "-1.0"),
            ("past u32::MAX", "4294967296.0"),
            ("a fraction", "0.5"),
        ];
        for (rule, small) in rows {
            let got = read(&format!("{{\"n\": 1, \"small\": {small}}}"));
            assert!(
                matches!(&got, Err((field, _)) if field == "small"),
                "{rule}: {got:?}"
            );
        }
    }

    #[test]
    fn whole_numbers_inside_a_foreign_type_are_read_as_integers() {
        #[derive(Debug, Deserialize, PartialEq)]
        struct Terms {
            amount: i64,
            days: u32,
        }
        #[derive(Debug, Deserialize)]
        struct Outer {
            #[serde(default, deserialize_with = "with_whole_numbers")]
            terms: Option<Terms>,
        }
        let terms = |json: &str| parse::<Outer>(json.as_bytes()).map(|o| o.terms);
        assert_eq!(
            terms(r#"{"terms": {"amount": 500.0, "days": 7}}"#).unwrap(),
            Some(Terms {
                amount: 500,
                days: 7
            })
        );
        assert_eq!(terms(r#"{"terms": null}"#).unwrap(), None);
        assert_eq!(terms("{}").unwrap(), None);
        let Err(ApiError::Validation(errors)) = terms(r#"{"terms": {"amount": 5.5, "days": 7}}"#)
        else {
            panic!("a fraction inside is refused");
        };
        assert_eq!(errors[0].field, "terms");
        assert!(
            errors[0].message.starts_with("amount: "),
            "{}",
            errors[0].message
        );
    }
}
