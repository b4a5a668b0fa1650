//! Hostile input at the edges: amounts that would overflow, ages that would panic, text that is
//! not ASCII. Each is refused with a problem document naming the field, and nothing is written.

use ocart_tests::{capture_body, session, spawn_app, Kind, TestApp};
use serde_json::{json, Value};

async fn event_count(app: &TestApp) -> i64 {
    app.core.log.stats().await.unwrap().0
}

/// Two carts priced at 2⁶³−1 once broke analytics and the dashboard for good (integer
/// overflow in the sums) and made the email read `-€0.02`. Capture now refuses any price,
/// line or total past 10¹¹ minor units; the largest accepted carts still add up.
async fn prices_that_could_overflow_are_refused_and_the_largest_accepted_still_add_up(kind: Kind) {
    let app = spawn_app(kind).await;
    let before = event_count(&app).await;
    let s = session();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut body = capture_body(&s, "big@example.com", 1);
        f(&mut body);
        body
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "a unit price of i64::MAX",
            with(&|b| {
                b["items"][0]["unit_price"] = json!(i64::MAX);
                b.as_object_mut().unwrap().remove("totals");
            }),
            "items[0].unit_price",
        ),
        (
            "a line total past the bound",
            with(&|b| {
                b["items"][0]["unit_price"] = json!(100_000_000_000i64);
                b["items"][0]["quantity"] = json!(2);
                b.as_object_mut().unwrap().remove("totals");
            }),
            "items[0].unit_price",
        ),
        (
            "lines that only together pass the bound",
            with(&|b| {
                let line = b["items"][0].clone();
                let mut second = line.clone();
                second["product_id"] = json!(43);
                b["items"] = json!([line, second]);
                b["items"][0]["unit_price"] = json!(60_000_000_000i64);
                b["items"][1]["unit_price"] = json!(60_000_000_000i64);
                b.as_object_mut().unwrap().remove("totals");
            }),
            "items",
        ),
        (
            "a stated total of i64::MAX",
            with(&|b| b["totals"]["total"] = json!(i64::MAX)),
            "totals.total",
        ),
        (
            "a quantity past u32",
            with(&|b| b["items"][0]["quantity"] = json!(u64::from(u32::MAX) + 1)),
            "items[0].quantity",
        ),
    ];
    for (case, body, field) in cases {
        let (status, problem) = app.capture(&body).await;
        assert_eq!(status, 422, "{case}: {problem}");
        let named = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == field);
        assert!(named, "{case}: the problem names {field}: {problem}");
    }
    assert_eq!(event_count(&app).await, before, "nothing was written");

    // Two carts at the largest accepted price, abandoned: the reports still answer.
    for email in ["max1@example.com", "max2@example.com"] {
        let mut body = capture_body(&session(), email, 1);
        body["items"][0]["unit_price"] = json!(100_000_000_000i64);
        body.as_object_mut().unwrap().remove("totals");
        let (status, reply) = app.capture(&body).await;
        assert_eq!(status, 202, "{reply}");
        let id = reply["cart_id"].as_str().unwrap();
        let (status, body) = app
            .post(
                &format!("/ocart/v1/carts/{id}/abandon"),
                Some(&app.admin),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.eventually("/ocart/v1/carts?status=abandoned", |b| {
        b["carts"].as_array().is_some_and(|c| c.len() == 2)
    })
    .await;
    for path in [
        "/ocart/v1/recovery/analytics?days=30",
        "/ocart/v1/reports/dashboard?days=30",
    ] {
        let (status, body) = app.admin_get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn postgres_prices_that_could_overflow_are_refused_and_the_largest_accepted_still_add_up() {
    prices_that_could_overflow_are_refused_and_the_largest_accepted_still_add_up(Kind::Postgres)
        .await;
}

#[tokio::test]
async fn sqlite_prices_that_could_overflow_are_refused_and_the_largest_accepted_still_add_up() {
    prices_that_could_overflow_are_refused_and_the_largest_accepted_still_add_up(Kind::Sqlite)
        .await;
}

/// `since=99999999999999d` (out of chrono's range) and an age ending in a multi-byte
/// character once panicked the handler, dropping the connection with no answer.
#[tokio::test]
async fn ages_that_would_panic_are_refused_by_name() {
    let app = spawn_app(Kind::Sqlite).await;
    for since in [
        "99999999999999d",
        "9223372036854775807s",
        "99999999999999999999999h",
        "24%C3%A9",
        "%E6%97%A5",
        "%EF%BC%92%EF%BC%94h",
    ] {
        let (status, problem) = app
            .admin_get(&format!("/ocart/v1/carts?since={since}"))
            .await;
        assert_eq!(status, 422, "since={since}: {problem}");
        assert_eq!(problem["errors"][0]["field"], "since", "since={since}");
    }
    let (status, page) = app.admin_get("/ocart/v1/carts?since=24h").await;
    assert_eq!(status, 200, "{page}");
}

/// A second signal for an order in another currency was a 500 (found by schemathesis): the
/// order refuses it, and that is a conflict the caller can see, not a failure of the server.
#[tokio::test]
async fn an_order_signal_in_another_currency_is_a_conflict() {
    let app = spawn_app(Kind::Sqlite).await;
    let order = |currency: &str| {
        json!({"order_id": "currency-1", "status": "processing", "currency": currency,
               "total": 1000})
    };
    let (status, body) = app
        .post("/ocart/v1/orders", Some(&app.admin), &order("EUR"))
        .await;
    assert_eq!(status, 200, "{body}");
    let before = event_count(&app).await;
    let (status, problem) = app
        .post("/ocart/v1/orders", Some(&app.admin), &order("USD"))
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "https://ocart.dev/problems/conflict");
    assert!(
        problem["detail"].as_str().unwrap().contains("currency"),
        "{problem}"
    );
    assert_eq!(event_count(&app).await, before, "nothing is written");
}

/// A top-level JSON array was read positionally into the request (`[null]` previewed the
/// saved template; found by schemathesis). Every body is an object: an array is refused.
#[tokio::test]
async fn a_json_array_is_not_a_request_body() {
    let app = spawn_app(Kind::Sqlite).await;
    for (path, body) in [
        (
            "/ocart/v1/recovery/templates/recovery_email_1/preview",
            "[null]",
        ),
        (
            "/ocart/v1/privacy/erase",
            r#"["a@example.com", null, "why"]"#,
        ),
    ] {
        let resp = app
            .client
            .post(app.url(path))
            .bearer_auth(&app.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{path} {body}");
        let problem: Value = resp.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "body", "{problem}");
    }
    // The optional preview body may still be absent or null.
    for body in ["", "null"] {
        let resp = app
            .client
            .post(app.url("/ocart/v1/recovery/templates/recovery_email_1/preview"))
            .bearer_auth(&app.admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "preview with body {body:?}");
    }
}
