//! CORS for the shopper-facing routes the store's checkout page calls from the browser: the
//! capture, the funnel a cart gets, the eligible bumps and a bump's accept/decline. No other
//! route answers a preflight or carries an `Access-Control-*` header; the hosted upsell page
//! calls its routes from OCart's own origin and needs none.
//!
//! Allowed origins: `[http] cors_origins` (default: the WooCommerce store's origin when
//! `[woocommerce] url` is set, else none) together with the `general.allowed_origins`
//! setting, which an admin changes at run time. A preflight is answered here with 204; every
//! answer of these routes says `Vary: Origin`.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::Config;
use crate::core::Core;

/// The request headers a shopper route accepts from another origin (the session token travels
/// in the query or the body, never in a header; bearer tokens are not for browsers).
pub const ALLOW_HEADERS: &str = "content-type, idempotency-key, ocart-position";
/// The answer headers a script on the store's page may read.
const EXPOSE_HEADERS: &str = "retry-after, x-request-id";
/// How long a browser may keep a preflight's answer.
const MAX_AGE_SECS: u32 = 600;

/// The methods a shopper route answers, or `None` for every other route.
pub fn shopper_methods(path: &str) -> Option<&'static str> {
    let rest = path.strip_prefix("/ocart/v1/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["checkout", "capture"] => Some("POST"),
        ["funnels", "resolve"] | ["bumps", "eligible"] => Some("GET"),
        ["bumps", id, "accept" | "decline"] if !id.is_empty() => Some("POST"),
        _ => None,
    }
}

/// The origin (`scheme://host[:port]`) of a URL or origin text, or `None` if it has none.
pub fn origin_of(text: &str) -> Option<String> {
    let url = reqwest::Url::parse(text.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The origins the configuration allows: `http.cors_origins` if set (an entry that is not an
/// http(s) origin is an error naming it), else the WooCommerce store's origin, else none.
pub fn configured_origins(config: &Config) -> anyhow::Result<Vec<String>> {
    match &config.http.cors_origins {
        Some(list) => list
            .iter()
            .map(|o| {
                origin_of(o).ok_or_else(|| {
                    anyhow::anyhow!("http.cors_origins: {o:?} is not an http(s) origin")
                })
            })
            .collect(),
        None => Ok(config
            .woocommerce
            .url
            .as_deref()
            .and_then(origin_of)
            .into_iter()
            .collect()),
    }
}

/// The allowed origins: the configured ones and the `general.allowed_origins` setting (kept
/// fresh from the settings cache by a task that ends with the router).
#[derive(Clone)]
pub struct Cors {
    configured: Arc<Vec<String>>,
    settings: Arc<RwLock<Vec<String>>>,
}

impl Cors {
    pub fn new(core: Arc<Core>) -> Self {
        let configured = Arc::new(configured_origins(&core.config).unwrap_or_default());
        let settings = Arc::new(RwLock::new(Vec::<String>::new()));
        let refresh = Arc::downgrade(&settings);
        tokio::spawn(async move {
            loop {
                if refresh.strong_count() == 0 {
                    return;
                }
                if let Ok(current) = core.settings().await {
                    let origins = current
                        .general
                        .allowed_origins
                        .iter()
                        .filter_map(|o| origin_of(o))
                        .collect();
                    if let Some(target) = refresh.upgrade() {
                        if let Ok(mut slot) = target.write() {
                            *slot = origins;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Self {
            configured,
            settings,
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.configured.iter().any(|o| o == origin)
            || self
                .settings
                .read()
                .map(|s| s.iter().any(|o| o == origin))
                .unwrap_or(false)
    }

    /// The request's `Origin` if it is allowed.
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        self.allows(origin.to_str().ok()?).then(|| origin.clone())
    }
}

/// The layer: answers preflights of the shopper routes, adds the CORS headers to their answers
/// for allowed origins, and leaves every other route alone.
pub async fn layer(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let Some(methods) = shopper_methods(req.uri().path()) else {
        return next.run(req).await;
    };
    let origin = cors.allowed_origin(req.headers());
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    let Some(origin) = origin else {
        return response;
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if preflight {
        headers.append(
            header::VARY,
            HeaderValue::from_static(
                "access-control-request-method, access-control-request-headers",
            ),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(MAX_AGE_SECS),
        );
    } else {
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_shopper_routes_are_cross_origin() {
        for (path, methods) in [
            ("/ocart/v1/checkout/capture", Some("POST")),
            ("/ocart/v1/funnels/resolve", Some("GET")),
            ("/ocart/v1/bumps/eligible", Some("GET")),
            ("/ocart/v1/bumps/bump-1/accept", Some("POST")),
            ("/ocart/v1/bumps/bump-1/decline", Some("POST")),
            ("/ocart/v1/bumps//accept", None),
            ("/ocart/v1/bumps", None),
            ("/ocart/v1/bumps/bump-1", None),
            ("/ocart/v1/funnels", None),
            ("/ocart/v1/upsells/u-1/accept", None),
            ("/ocart/v1/settings", None),
            ("/ocart/v1/checkout/capture/x", None),
        ] {
            assert_eq!(shopper_methods(path), methods, "{path}");
        }
    }

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(
            origin_of("https://shop.example.com/wp/").as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(
            origin_of("http://shop.example.com:8080").as_deref(),
            Some("http://shop.example.com:8080")
        );
        assert_eq!(
            origin_of("https://shop.example.com:443").as_deref(),
            Some("https://shop.example.com")
        );
        assert_eq!(origin_of("shop.example.com"), None);
        assert_eq!(origin_of("ftp://shop.example.com"), None);
    }

    #[test]
    fn the_default_origin_is_the_woocommerce_store() {
        let mut config = Config::default();
        assert!(configured_origins(&config).unwrap().is_empty());
        config.woocommerce.url = Some("https://shop.example.com/store".into());
        assert_eq!(
            configured_origins(&config).unwrap(),
            vec!["https://shop.example.com".to_owned()]
        );
        config.http.cors_origins = Some(vec![]);
        assert!(configured_origins(&config).unwrap().is_empty());
        config.http.cors_origins = Some(vec!["not an origin".into()]);
        assert!(configured_origins(&config).is_err());
    }
}
