//! Cart capture through HTTP: read-your-writes, validation, consent, sealing, erasure, rate
//! limits and CORS.

use ocart_projections::Db;
use ocart_tests::{capture_body, session, spawn_app, spawn_app_with, Kind, TestApp};
use serde_json::{json, Value};

async fn event_count(app: &TestApp) -> i64 {
    app.core.log.stats().await.unwrap().0
}

async fn a_capture_is_readable_at_once(kind: Kind) {
    let app = spawn_app(kind).await;
    let s = session();
    let (status, reply) = app.capture(&capture_body(&s, "Ann@Example.com", 2)).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply["captured"], true);
    assert_eq!(reply["session_token"], s.as_str());
    let position = reply["position"].as_i64().expect("a position");
    let cart_id = reply["cart_id"].as_str().unwrap();
    let resp = app
        .client
        .get(app.url(&format!("/ocart/v1/carts/{cart_id}")))
        .bearer_auth(&app.admin)
        .header("OCart-Position", position.to_string())
        .send()
        .await
        .unwrap();
    let (status, cart) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{cart}");
    assert_eq!(cart["email"], "ann@example.com");
    assert_eq!(cart["phone"], "+14155550123");
    assert_eq!(cart["name"], "Ann Example");
    assert_eq!(cart["status"], "active");
    assert_eq!(cart["stage"], "checkout");
    assert_eq!(cart["currency"], "EUR");
    assert_eq!(cart["total_minor"], 2500);
    assert_eq!(cart["items"][0]["quantity"], 2);
    assert_eq!(cart["consent_text"], "Email me a reminder about my cart");
    // The same session addresses the same cart; a material change updates it.
    let (_, again) = app.capture(&capture_body(&s, "ann@example.com", 3)).await;
    assert_eq!(again["cart_id"], reply["cart_id"]);
    assert!(again["position"].as_i64().unwrap() > position);
    let page = app
        .eventually("/ocart/v1/carts?status=active", |b| {
            b["carts"][0]["total_minor"] == 3750
        })
        .await;
    assert_eq!(page["carts"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_a_capture_is_readable_at_once() {
    a_capture_is_readable_at_once(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_capture_is_readable_at_once() {
    a_capture_is_readable_at_once(Kind::Sqlite).await;
}

#[tokio::test]
async fn a_capture_without_a_session_token_is_issued_one() {
    let app = spawn_app(Kind::Sqlite).await;
    let mut body = capture_body("x", "bo@example.com", 1);
    body.as_object_mut().unwrap().remove("session_token");
    let (status, reply) = app.capture(&body).await;
    assert_eq!(status, 202);
    assert!(reply["session_token"].as_str().unwrap().len() >= 32);
}

#[tokio::test]
async fn a_repeated_capture_within_a_minute_emits_no_event() {
    let app = spawn_app(Kind::Sqlite).await;
    let s = session();
    app.capture(&capture_body(&s, "cy@example.com", 1)).await;
    let before = event_count(&app).await;
    let (status, reply) = app.capture(&capture_body(&s, "cy@example.com", 1)).await;
    assert_eq!(status, 202);
    assert_eq!(reply["position"], Value::Null);
    assert_eq!(event_count(&app).await, before);
    app.clock.advance(chrono::Duration::seconds(61));
    let (_, reply) = app.capture(&capture_body(&s, "cy@example.com", 1)).await;
    assert!(
        reply["position"].is_i64(),
        "after a minute the activity is recorded"
    );
    assert_eq!(event_count(&app).await, before + 1);
}

async fn invalid_input_is_refused_by_field_and_nothing_is_written(kind: Kind) {
    let app = spawn_app(kind).await;
    let before = event_count(&app).await;
    let s = session();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut body = capture_body(&s, "ok@example.com", 1);
        f(&mut body);
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (with(&|b| b["email"] = json!("not-an-email")), "email"),
        (with(&|b| b["phone"] = json!("555-0123")), "phone"),
        (with(&|b| b["currency"] = json!("EURO")), "currency"),
        (
            with(&|b| b["items"][0]["quantity"] = json!(0)),
            "items[0].quantity",
        ),
        (
            with(&|b| b["items"][0]["quantity"] = json!(-2)),
            "items[0].quantity",
        ),
        (
            with(&|b| b["items"][0]["unit_price"] = json!(-1)),
            "items[0].unit_price",
        ),
        (
            with(&|b| b["items"][0]["quantity"] = json!("two")),
            "items[0].quantity",
        ),
        (
            with(&|b| b["items"][0]["name"] = json!("x".repeat(201))),
            "items[0].name",
        ),
        (with(&|b| b["source"] = json!("fax")), "source"),
        (with(&|b| b["stage"] = json!("paid")), "stage"),
        (with(&|b| b["totals"]["total"] = json!(-5)), "totals.total"),
        (
            with(&|b| b["session_token"] = json!("short")),
            "session_token",
        ),
        (with(&|b| b["items"] = json!([])), "items"),
        (with(&|b| b["email"] = json!(12)), "email"),
        (
            with(&|b| {
                b.as_object_mut().unwrap().remove("currency");
            }),
            "currency",
        ),
    ];
    for (body, field) in cases {
        let (status, problem) = app.capture(&body).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["status"], 422);
        let fields: Vec<&str> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(fields.contains(&field), "{field} not named in {problem}");
    }
    let too_many: Vec<Value> = (0..501)
        .map(|i| json!({"product_id": i, "name": "x", "quantity": 1, "unit_price": 1}))
        .collect();
    let (status, problem) = app
        .capture(&with(&|b| b["items"] = json!(too_many.clone())))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "items");
    // Malformed JSON and an oversized body.
    let resp = app
        .client
        .post(app.url("/ocart/v1/checkout/capture"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let big = json!({"email": "a@example.com", "currency": "EUR", "items": [], "pad": "x".repeat(70 * 1024)});
    let resp = app
        .client
        .post(app.url("/ocart/v1/checkout/capture"))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        event_count(&app).await,
        before,
        "no event appended for bad input"
    );
    let (status, _) = app.admin_get("/ocart/v1/ping").await;
    assert_eq!(status, 200, "the server stays up");
}

#[tokio::test]
async fn postgres_invalid_input_is_refused_by_field_and_nothing_is_written() {
    invalid_input_is_refused_by_field_and_nothing_is_written(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_invalid_input_is_refused_by_field_and_nothing_is_written() {
    invalid_input_is_refused_by_field_and_nothing_is_written(Kind::Sqlite).await;
}

#[tokio::test]
async fn nothing_is_captured_without_consent_and_withdrawal_erases_the_cart() {
    let app = spawn_app(Kind::Postgres).await;
    let before = event_count(&app).await;
    let s = session();
    let mut body = capture_body(&s, "dee@example.com", 1);
    body.as_object_mut().unwrap().remove("consent");
    let (status, reply) = app.capture(&body).await;
    assert_eq!(status, 202);
    assert_eq!(reply["captured"], false);
    assert_eq!(event_count(&app).await, before, "no consent, no event");

    let (_, reply) = app.capture(&capture_body(&s, "dee@example.com", 1)).await;
    let cart_id = reply["cart_id"].as_str().unwrap().to_owned();
    app.eventually(&format!("/ocart/v1/carts/{cart_id}"), |c| {
        c["email"] == "dee@example.com"
    })
    .await;
    let mut withdraw = capture_body(&s, "dee@example.com", 1);
    withdraw["consent"] = json!(false);
    let (status, reply) = app.capture(&withdraw).await;
    assert_eq!(status, 202);
    assert_eq!(reply["captured"], false);
    let resp = app
        .client
        .get(app.url(&format!("/ocart/v1/carts/{cart_id}")))
        .bearer_auth(&app.admin)
        .header(
            "OCart-Position",
            reply["position"].as_i64().unwrap().to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "a withdrawn cart leaves the read table");
}

#[tokio::test]
async fn personal_data_is_sealed_in_the_log_and_erasure_blanks_it_even_after_a_rebuild() {
    let app = spawn_app(Kind::Postgres).await;
    let s = session();
    let (_, reply) = app
        .capture(&capture_body(&s, "erin.secret@example.com", 1))
        .await;
    let cart_id = reply["cart_id"].as_str().unwrap().to_owned();
    let Db::Pg(pool) = &app.core.db else {
        unreachable!()
    };
    let raw: Vec<(String, String)> =
        sqlx::query_as("SELECT payload::text, metadata::text FROM events")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(!raw.is_empty());
    for (payload, metadata) in &raw {
        for needle in ["erin.secret", "Ann Example", "4155550123"] {
            assert!(
                !payload.contains(needle) && !metadata.contains(needle),
                "clear text {needle} in the log: {payload}"
            );
        }
    }
    app.eventually(&format!("/ocart/v1/carts/{cart_id}"), |c| {
        c["email"] == "erin.secret@example.com"
    })
    .await;
    let (status, erased) = app
        .post(
            "/ocart/v1/privacy/erase",
            Some(&app.admin),
            &json!({"email": "Erin.Secret@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{erased}");
    let cart = app
        .eventually(&format!("/ocart/v1/carts/{cart_id}"), |c| {
            c["erased"] == true
        })
        .await;
    assert_eq!(cart["email"], Value::Null);
    assert_eq!(cart["name"], Value::Null);
    // A rebuild from the log shows the same: the key is gone.
    let runners = app.core.runners().await.unwrap();
    let carts = runners.iter().find(|r| r.name() == "carts").unwrap();
    carts.rebuild(|_| {}).await.unwrap();
    let row = ocart_projections::queries::get_cart(&app.core.db, &cart_id)
        .await
        .unwrap()
        .unwrap();
    assert!(row.erased);
    assert_eq!(row.email, None);
    assert_eq!(row.name, None);
}

#[tokio::test]
async fn public_endpoints_are_rate_limited_per_client_ip() {
    let app = spawn_app_with(Kind::Sqlite, |c| {
        c.rate_limit.capture_requests = 3;
        c.rate_limit.window_secs = 600;
        c.rate_limit.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let send = |ip: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/ocart/v1/checkout/capture"))
                .header("x-forwarded-for", ip)
                .json(&capture_body(&session(), "rl@example.com", 1))
                .send()
                .await
                .unwrap()
        }
    };
    for _ in 0..3 {
        assert_eq!(send("203.0.113.7").await.status(), 202);
    }
    let limited = send("203.0.113.7").await;
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 600);
    assert_eq!(
        send("203.0.113.8").await.status(),
        202,
        "another client has its own budget"
    );
}

#[tokio::test]
async fn forwarded_for_is_ignored_from_an_untrusted_peer() {
    let app = spawn_app_with(Kind::Sqlite, |c| {
        c.rate_limit.capture_requests = 2;
    })
    .await;
    for (i, ip) in ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .enumerate()
    {
        let resp = app
            .client
            .post(app.url("/ocart/v1/checkout/capture"))
            .header("x-forwarded-for", *ip)
            .json(&capture_body(&session(), "rl@example.com", 1))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), if i < 2 { 202 } else { 429 });
    }
}

#[tokio::test]
async fn cors_allows_only_the_configured_store_origins() {
    let app = spawn_app(Kind::Sqlite).await;
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&json!({"general": {"allowed_origins": ["https://shop.example.com"]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let preflight = |origin: &'static str| {
        let app = &app;
        async move {
            app.client
                .request(
                    reqwest::Method::OPTIONS,
                    app.url("/ocart/v1/checkout/capture"),
                )
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
                .send()
                .await
                .unwrap()
        }
    };
    let mut allowed = None;
    for _ in 0..40 {
        let resp = preflight("https://shop.example.com").await;
        if let Some(v) = resp.headers().get("access-control-allow-origin") {
            allowed = Some(v.to_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(allowed.as_deref(), Some("https://shop.example.com"));
    let other = preflight("https://evil.example.net").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

async fn concurrent_captures_of_one_cart_lose_no_update(kind: Kind) {
    let app = spawn_app(kind).await;
    let s = session();
    let mut tasks = Vec::new();
    for q in 1..=12 {
        let client = app.client.clone();
        let url = app.url("/ocart/v1/checkout/capture");
        let body = capture_body(&s, "race@example.com", q);
        tasks.push(tokio::spawn(async move {
            let reply = ocart_tests::read(client.post(url).json(&body).send().await.unwrap()).await;
            (q, reply)
        }));
    }
    let mut written = 0;
    // (position, quantity) of every capture that wrote an event.
    let mut accepted: Vec<(i64, i64)> = Vec::new();
    let mut cart_id = String::new();
    for t in tasks {
        let (q, (status, reply)) = t.await.unwrap();
        if let Some(id) = reply["cart_id"].as_str() {
            cart_id = id.to_owned();
        }
        assert!(status == 202 || status == 409, "{status} {reply}");
        if status == 202 {
            if let Some(position) = reply["position"].as_i64() {
                written += 1;
                accepted.push((position, q));
            }
        }
        if status == 409 {
            assert_eq!(reply["status"], 409);
        }
    }
    let events = app.core.log.load("cart", &cart_id).await.unwrap();
    let sequences: Vec<i64> = events.iter().map(|e| e.sequence).collect();
    assert_eq!(
        sequences,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "one history, no gaps, no forks"
    );
    assert_eq!(
        events.len(),
        written,
        "every accepted capture is exactly one event"
    );
    // What reads back is the last accepted capture: the highest position answered wins.
    let (last_position, last_quantity) = *accepted.iter().max().expect("one capture wrote");
    let resp = app
        .client
        .get(app.url(&format!("/ocart/v1/carts/{cart_id}")))
        .bearer_auth(&app.admin)
        .header("OCart-Position", last_position.to_string())
        .send()
        .await
        .unwrap();
    let (status, cart) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{cart}");
    assert_eq!(cart["items"][0]["quantity"], last_quantity, "{cart}");
    assert_eq!(cart["total_minor"], 1250 * last_quantity, "{cart}");
    // And each event holds the quantity of a capture that was told it was written.
    let mut logged: Vec<i64> = events
        .iter()
        .map(|e| e.payload_value()["items"][0]["quantity"].as_i64().unwrap())
        .collect();
    let mut answered: Vec<i64> = accepted.iter().map(|(_, q)| *q).collect();
    logged.sort_unstable();
    answered.sort_unstable();
    assert_eq!(
        logged, answered,
        "the log holds exactly the accepted captures"
    );
}

#[tokio::test]
async fn postgres_concurrent_captures_of_one_cart_lose_no_update() {
    concurrent_captures_of_one_cart_lose_no_update(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_concurrent_captures_of_one_cart_lose_no_update() {
    concurrent_captures_of_one_cart_lose_no_update(Kind::Sqlite).await;
}

/// Capture, restore and the pixel have a budget per client IP each; an unsubscribe link has
/// its own budget and is never refused because its IP used up another budget (RFC 8058:
/// mailbox providers send one-click POSTs from shared addresses).
#[tokio::test]
async fn an_address_out_of_capture_budget_can_still_unsubscribe_restore_and_load_the_pixel() {
    use crate::orders::link_path;
    use crate::recovery::{capture, Manual};
    let m = Manual::start(Kind::Sqlite, |c| {
        c.rate_limit.capture_requests = 2;
        c.rate_limit.restore_requests = 2;
        c.rate_limit.pixel_requests = 2;
        c.rate_limit.unsubscribe_per_token = 3;
    })
    .await;
    let app = &m.app;
    let _cart = capture(app, "ann@example.com").await;
    app.clock.advance(chrono::Duration::minutes(31));
    m.settle().await;
    app.clock.advance(chrono::Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    let eml = ocart_tests::outbox_emails(app)[0].1.clone();
    let unsubscribe = link_path(&eml, "u").expect("an unsubscribe link");
    let restore = link_path(&eml, "r").expect("a restore link");
    let pixel = link_path(&eml, "o").expect("an open pixel");

    // This address (every request here comes from 127.0.0.1) uses up its capture budget.
    let (status, _) = app
        .capture(&capture_body(&session(), "bob@example.com", 1))
        .await;
    assert_eq!(status, 202);
    let (status, problem) = app
        .capture(&capture_body(&session(), "cy@example.com", 1))
        .await;
    assert_eq!(status, 429, "{problem}");

    // The one-click unsubscribe from the same address is honoured.
    let one_click = || {
        app.client
            .post(app.url(&unsubscribe))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
    };
    let resp = one_click().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("You are unsubscribed"));

    // Restore and the pixel have budgets of their own.
    let no_redirects = crate::orders::no_redirects();
    for _ in 0..2 {
        let resp = no_redirects.get(app.url(&restore)).send().await.unwrap();
        assert_ne!(resp.status().as_u16(), 429, "restore has its own budget");
    }
    let resp = no_redirects.get(app.url(&restore)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 429, "restore's budget is per IP");
    for _ in 0..2 {
        let resp = app.client.get(app.url(&pixel)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "the pixel has its own budget");
        assert_eq!(resp.headers()["content-type"], "image/gif");
    }

    // Guessed tokens count against the address's restore budget, now used up...
    let guess = app
        .client
        .post(app.url("/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(guess.status().as_u16(), 429);
    // ...while a real unsubscribe link has its own small budget: its GET page and POSTs count,
    // not the IP's.
    let page = app.client.get(app.url(&unsubscribe)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert_eq!(one_click().await.unwrap().status().as_u16(), 200);
    let limited = one_click().await.unwrap();
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(
        limited.headers()["content-type"],
        "application/problem+json"
    );
    assert!(limited.headers().contains_key("retry-after"));
}

/// Capture is not a suppression oracle: a suppressed address gets the very answer any other
/// address gets, and is still not captured.
async fn capture_answers_alike_for_suppressed_and_other_addresses(kind: Kind) {
    let app = spawn_app(kind).await;
    let (status, body) = app
        .post(
            "/ocart/v1/recovery/suppression",
            Some(&app.admin),
            &json!({"recipient": "gone@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let position = body["position"].as_i64().unwrap();
    // Let the suppression list show it before capturing.
    let (status, _) = app
        .get(
            &format!("/ocart/v1/recovery/suppression?min_position={position}"),
            &app.admin,
        )
        .await;
    assert_eq!(status, 200);

    let (suppressed_status, suppressed) = app
        .capture(&capture_body(&session(), "Gone@Example.com", 1))
        .await;
    let (other_status, other) = app
        .capture(&capture_body(&session(), "here@example.com", 1))
        .await;
    assert_eq!(suppressed_status, other_status);
    assert_eq!(suppressed_status, 202);
    let shape = |v: &Value| {
        let mut keys: Vec<(String, &'static str)> = v
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let kind = match v {
                    Value::Null => "null",
                    Value::Bool(_) => "bool",
                    Value::Number(_) => "number",
                    Value::String(_) => "string",
                    _ => "other",
                };
                (k.clone(), kind)
            })
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(shape(&suppressed), shape(&other), "{suppressed} vs {other}");
    assert_eq!(suppressed["captured"], other["captured"]);
    assert_eq!(suppressed["status"], other["status"]);
    assert_ne!(suppressed["status"], "suppressed");

    // The suppressed shopper's cart is still not kept; the other one is.
    for (reply, kept) in [(&suppressed, false), (&other, true)] {
        let resp = app
            .client
            .get(app.url(&format!(
                "/ocart/v1/carts/{}",
                reply["cart_id"].as_str().unwrap()
            )))
            .bearer_auth(&app.admin)
            .header("OCart-Position", other["position"].to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), if kept { 200 } else { 404 });
        let events = app
            .core
            .log
            .load("cart", reply["cart_id"].as_str().unwrap())
            .await
            .unwrap();
        assert_eq!(
            events.is_empty(),
            !kept,
            "no cart event for the suppressed one"
        );
    }
}

#[tokio::test]
async fn postgres_capture_answers_alike_for_suppressed_and_other_addresses() {
    capture_answers_alike_for_suppressed_and_other_addresses(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_capture_answers_alike_for_suppressed_and_other_addresses() {
    capture_answers_alike_for_suppressed_and_other_addresses(Kind::Sqlite).await;
}
