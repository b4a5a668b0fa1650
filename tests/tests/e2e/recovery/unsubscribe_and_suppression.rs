//! The unsubscribe link (RFC 8058 one-click) and the suppression list.

use chrono::Duration;
use ocart_tests::{capture_body, outbox_emails, session, spawn_app, Kind};
use serde_json::json;

use super::{capture, events_of, header, Manual};

/// The unsubscribe link: GET shows a confirmation and changes nothing; the one-click POST
/// (RFC 8058) suppresses the recipient and stops their runs; later carts are not mailed.
async fn unsubscribe(kind: Kind) {
    let m = Manual::start(kind, |_| {}).await;
    let app = &m.app;
    let cart = capture(app, "ann@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    let emails = outbox_emails(app);
    let list_unsubscribe = header(&emails[0].1, "List-Unsubscribe").unwrap().to_owned();
    let url = list_unsubscribe
        .split(['<', '>'])
        .find(|p| p.starts_with("https://"))
        .unwrap();
    let path = url.strip_prefix("https://ocart.shop.test").unwrap();
    assert!(path.starts_with("/u/"), "{path}");

    // A GET (a link scanner, or the shopper's click) only asks.
    let page = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    m.project().await;
    assert_eq!(m.only_run(&cart).await["status"], "pending");

    // Tampered and unknown tokens: a friendly page, nothing recorded.
    for bad in [
        "/u/nope",
        "/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &format!("{path}x"),
    ] {
        let resp = app.client.post(app.url(bad)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{bad}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("This link is not valid"), "{body}");
    }

    // A second cart of the shopper, captured before they unsubscribe.
    let second = capture(app, "ann@example.com").await;
    // The one-click POST a mail client sends.
    for _ in 0..2 {
        let resp = app
            .client
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.text().await.unwrap().contains("You are unsubscribed"));
    }
    m.project().await;
    let run = m.only_run(&cart).await;
    assert_eq!(run["status"], "stopped");
    assert_eq!(run["stop_reason"], "unsubscribed");
    assert_eq!(events_of(app, "recovery/unsubscribed").await.len(), 1);
    let (_, list) = app.admin_get("/ocart/v1/recovery/suppression").await;
    assert_eq!(list["suppression"][0]["reason"], "unsubscribe");
    assert_eq!(list["suppression"][0]["channel"], "email");

    // The second cart, abandoned after the unsubscribe, is not mailed: the guard stops it.
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    let report = m.dispatch().await;
    assert_eq!((report.sent, report.stopped), (0, 1));
    assert_eq!(m.only_run(&second).await["stop_reason"], "suppressed");
    assert_eq!(outbox_emails(app).len(), 1);

    // And the shopper is not tracked again, though the answer does not say so (capture is no
    // suppression oracle: it answers as for any shopper).
    let (status, reply) = app
        .capture(&capture_body(&session(), "ann@example.com", 1))
        .await;
    assert_eq!(status, 202);
    assert_eq!(reply["captured"], true);
    assert_eq!(reply["status"], "active");
    let kept = app
        .core
        .log
        .load("cart", reply["cart_id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(
        kept.is_empty(),
        "the unsubscribed shopper's cart is not kept"
    );
}

#[tokio::test]
async fn postgres_one_click_unsubscribe_suppresses_and_stops_every_run() {
    unsubscribe(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_one_click_unsubscribe_suppresses_and_stops_every_run() {
    unsubscribe(Kind::Sqlite).await;
}

/// The suppression list through the API: add, list, remove; bad recipients are refused.
#[tokio::test]
async fn the_suppression_list_is_managed_through_the_api() {
    let app = spawn_app(Kind::Sqlite).await;
    let (status, added) = app
        .post(
            "/ocart/v1/recovery/suppression",
            Some(&app.admin),
            &json!({"recipient": "Zed@Example.com", "reason": "complaint"}),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    let hash = added["recipient_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    let list = app
        .eventually("/ocart/v1/recovery/suppression", |b| {
            b["suppression"].as_array().is_some_and(|s| s.len() == 1)
        })
        .await;
    assert_eq!(list["suppression"][0]["reason"], "complaint");
    assert_eq!(list["suppression"][0]["recipient_hash"], hash.as_str());
    assert!(!list.to_string().contains("zed@example.com"));
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/suppression",
            Some(&app.admin),
            &json!({"recipient": "not an address"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "recipient");
    let delete = |query: String| {
        let request = app
            .client
            .delete(app.url(&format!("/ocart/v1/recovery/suppression?{query}")))
            .bearer_auth(&app.admin);
        async move { ocart_tests::read(request.send().await.unwrap()).await }
    };
    let (status, body) = delete("recipient=zed%40example.com".into()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suppressed"], false);
    let (status, _) = delete(format!("recipient_hash={hash}")).await;
    assert_eq!(status, 404);
    app.eventually("/ocart/v1/recovery/suppression", |b| {
        b["suppression"].as_array().is_some_and(|s| s.is_empty())
    })
    .await;
}
