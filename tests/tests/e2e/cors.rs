//! CORS on the shopper routes the store's checkout page calls from another origin: preflights
//! from an allowed origin answered 204 with the route's methods and headers, other origins
//! refused (no `Access-Control-Allow-Origin`), `Vary: Origin` on every answer of those routes,
//! the allowed origins from `[http] cors_origins` or by default the WooCommerce store's
//! origin, and admin routes never cross-origin.

use ocart_tests::{capture_body, session, spawn_app_with, Kind, TestApp};
use reqwest::Method;

const SHOP: &str = "https://shop.example.com";
const OTHER: &str = "https://evil.example.net";

/// The shopper routes and the method each answers.
const SHOPPER_ROUTES: [(&str, &str); 5] = [
    ("/ocart/v1/checkout/capture", "POST"),
    ("/ocart/v1/funnels/resolve", "GET"),
    ("/ocart/v1/bumps/eligible", "GET"),
    ("/ocart/v1/bumps/bump-1/accept", "POST"),
    ("/ocart/v1/bumps/bump-1/decline", "POST"),
];

async fn preflight(app: &TestApp, path: &str, origin: &str, method: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, app.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "content-type, idempotency-key",
        )
        .send()
        .await
        .expect("preflight")
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    let values: Vec<&str> = resp
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", ").to_ascii_lowercase())
}

fn cors_headers(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

async fn configured(kind: Kind) -> TestApp {
    spawn_app_with(kind, |config| {
        config.http.cors_origins = Some(vec![format!("{SHOP}/")]);
    })
    .await
}

async fn preflights_from_the_store_are_answered_and_others_refused(kind: Kind) {
    let app = configured(kind).await;
    for (path, method) in SHOPPER_ROUTES {
        let resp = preflight(&app, path, SHOP, method).await;
        assert_eq!(resp.status().as_u16(), 204, "{path}");
        assert_eq!(
            header(&resp, "access-control-allow-origin").as_deref(),
            Some(SHOP),
            "{path}"
        );
        assert_eq!(
            header(&resp, "access-control-allow-methods").as_deref(),
            Some(method.to_ascii_lowercase().as_str()),
            "{path}"
        );
        let allowed = header(&resp, "access-control-allow-headers").unwrap_or_default();
        for name in ["content-type", "idempotency-key"] {
            assert!(allowed.contains(name), "{path}: {allowed}");
        }
        assert!(header(&resp, "access-control-max-age").is_some(), "{path}");
        assert!(
            header(&resp, "vary").unwrap_or_default().contains("origin"),
            "{path}"
        );

        let other = preflight(&app, path, OTHER, method).await;
        assert!(
            other.headers().get("access-control-allow-origin").is_none(),
            "{path}"
        );
        assert!(
            cors_headers(&other).is_empty(),
            "{path}: {:?}",
            cors_headers(&other)
        );
        assert!(
            header(&other, "vary")
                .unwrap_or_default()
                .contains("origin"),
            "{path}"
        );
    }

    // The answers themselves (here a capture and an unknown cart's bumps) carry the origin.
    let s = session();
    let resp = app
        .client
        .post(app.url("/ocart/v1/checkout/capture"))
        .header("origin", SHOP)
        .json(&capture_body(&s, "cors@example.com", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(SHOP)
    );
    assert!(header(&resp, "vary").unwrap_or_default().contains("origin"));
    let resp = app
        .client
        .get(app.url("/ocart/v1/bumps/eligible?session_token=no-such-session-token"))
        .header("origin", SHOP)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(SHOP)
    );
    let resp = app
        .client
        .get(app.url("/ocart/v1/bumps/eligible?session_token=no-such-session-token"))
        .header("origin", OTHER)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(cors_headers(&resp).is_empty());
}

#[tokio::test]
async fn postgres_preflights_from_the_store_are_answered_and_others_refused() {
    preflights_from_the_store_are_answered_and_others_refused(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_preflights_from_the_store_are_answered_and_others_refused() {
    preflights_from_the_store_are_answered_and_others_refused(Kind::Sqlite).await;
}

#[tokio::test]
async fn admin_routes_never_answer_cross_origin() {
    let app = configured(Kind::Sqlite).await;
    for (path, method) in [
        ("/ocart/v1/settings", "PATCH"),
        ("/ocart/v1/bumps", "POST"),
        ("/ocart/v1/funnels", "GET"),
        ("/ocart/v1/upsells/up-1/accept", "POST"),
    ] {
        let resp = preflight(&app, path, SHOP, method).await;
        assert_ne!(resp.status().as_u16(), 204, "{path}");
        assert!(
            cors_headers(&resp).is_empty(),
            "{path}: {:?}",
            cors_headers(&resp)
        );
    }
    let resp = app
        .client
        .get(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .header("origin", SHOP)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(cors_headers(&resp).is_empty(), "{:?}", cors_headers(&resp));
}

#[tokio::test]
async fn the_default_origin_is_the_woocommerce_store_and_none_without_it() {
    let app = spawn_app_with(Kind::Sqlite, |config| {
        config.woocommerce.url = Some(format!("{SHOP}/shop/"));
        config.woocommerce.consumer_key = Some("ck_test".into());
        config.woocommerce.consumer_secret = Some("cs_test".into());
    })
    .await;
    let resp = preflight(&app, "/ocart/v1/bumps/eligible", SHOP, "GET").await;
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(SHOP)
    );

    let bare = spawn_app_with(Kind::Sqlite, |_| {}).await;
    let resp = preflight(&bare, "/ocart/v1/bumps/eligible", SHOP, "GET").await;
    assert!(cors_headers(&resp).is_empty(), "{:?}", cors_headers(&resp));
}
