//! Deliverability: the open pixel, signed provider webhooks (delivery, bounce, complaint), the
//! feed, and suppression on a hard bounce or a complaint.

use chrono::Duration;
use hmac::{Hmac, Mac};
use ocart_domain::Clock;
use ocart_tests::{outbox_emails, Kind, TestApp};
use serde_json::{json, Value};

use crate::orders::link_path;
use crate::recovery::{capture, events_of, Manual};

const SECRET: &str = "provider-secret";

async fn started(kind: Kind) -> Manual {
    Manual::start(kind, |c| c.email.webhook_secret = Some(SECRET.into())).await
}

/// Sends step 1 to `email`; answers (cart id, the email's Message-ID).
async fn sent(m: &Manual, email: &str) -> (String, String) {
    let app = &m.app;
    let cart = capture(app, email).await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    let emails = outbox_emails(app);
    let eml = &emails.last().unwrap().1;
    let id = crate::recovery::header(eml, "Message-ID")
        .unwrap()
        .to_owned();
    (cart, id)
}

fn signature(t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn deliver(app: &TestApp, events: Value, signed_at: Option<i64>) -> (u16, Value) {
    let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
    let mut request = app
        .client
        .post(app.url("/ocart/v1/webhooks/deliverability"))
        .header("content-type", "application/json");
    if let Some(t) = signed_at {
        request = request.header("x-ocart-signature", signature(t, &body));
    }
    ocart_tests::read(request.body(body).send().await.unwrap()).await
}

async fn feed_kinds(m: &Manual) -> Vec<String> {
    m.project().await;
    let (_, feed) = m.app.admin_get("/ocart/v1/recovery/deliverability").await;
    feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn deliverability(kind: Kind) {
    let m = started(kind).await;
    let app = &m.app;
    let (_, message_id) = sent(&m, "ann@example.com").await;

    // The open pixel: always an image; the first open is recorded, once.
    let path = link_path(&outbox_emails(app)[0].1, "o").expect("an open pixel");
    let path = path.as_str();
    for _ in 0..2 {
        let resp = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.headers()["content-type"], "image/gif");
        assert!(resp.bytes().await.unwrap().starts_with(b"GIF89a"));
    }
    let resp = app
        .client
        .get(app.url("/o/AAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(feed_kinds(&m).await, ["open", "send"]);

    // A signed delivery report marks the message delivered; its retry changes nothing.
    let now = app.clock.now().timestamp();
    let delivered = json!([{"id": "evt-1", "type": "delivered", "message_id": message_id}]);
    let (status, reply) = deliver(app, delivered.clone(), Some(now)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["recorded"], 1);
    let (_, reply) = deliver(app, delivered.clone(), Some(now)).await;
    assert_eq!(reply["repeated"], 1);
    m.project().await;
    let (_, runs) = app.admin_get("/ocart/v1/recovery/runs").await;
    let run_id = runs["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let (_, detail) = app
        .admin_get(&format!("/ocart/v1/recovery/runs/{run_id}"))
        .await;
    assert_eq!(detail["notifications"][0]["status"], "delivered");

    // Unsigned, badly signed and stale deliveries are refused.
    let (status, problem) = deliver(app, delivered.clone(), None).await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["type"], "https://ocart.dev/problems/bad-signature");
    let (status, problem) = deliver(app, delivered.clone(), Some(now - 600)).await;
    assert_eq!(status, 401);
    assert!(problem["detail"].as_str().unwrap().contains("replay"));
    let (status, problem) = deliver(
        app,
        json!([{"type": "exploded", "message_id": message_id}]),
        Some(now),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "events[0].type");
    // A report about a message OCart never sent is ignored.
    let (_, reply) = deliver(
        app,
        json!([{"type": "bounce", "message_id": "<nope.s1.a1@shop.test>"}]),
        Some(now),
    )
    .await;
    assert_eq!(reply["unknown"], 1);

    // A soft bounce is recorded; a hard bounce suppresses and stops the run.
    let (_, reply) = deliver(
        app,
        json!([{"id": "evt-2", "type": "bounce", "bounce_type": "soft", "message_id": message_id}]),
        Some(now),
    )
    .await;
    assert_eq!(reply["recorded"], 1);
    m.project().await;
    let (_, list) = app.admin_get("/ocart/v1/recovery/suppression").await;
    assert_eq!(list["suppression"], json!([]));
    let (_, reply) = deliver(
        app,
        json!([{"id": "evt-3", "type": "bounce", "bounce_type": "hard", "detail": "550 5.1.1 user unknown", "message_id": message_id}]),
        Some(now),
    )
    .await;
    assert_eq!(reply["recorded"], 1);
    m.project().await;
    let (_, list) = app.admin_get("/ocart/v1/recovery/suppression").await;
    assert_eq!(list["suppression"][0]["reason"], "bounce");
    let (_, runs) = app.admin_get("/ocart/v1/recovery/runs").await;
    assert_eq!(runs["runs"][0]["stop_reason"], "suppressed");
    assert_eq!(
        feed_kinds(&m).await,
        ["bounce", "bounce", "delivery", "open", "send"]
    );
    let (_, bounces) = app
        .admin_get("/ocart/v1/recovery/deliverability?kind=bounce")
        .await;
    assert_eq!(bounces["events"][0]["detail"], "550 5.1.1 user unknown");
    assert!(bounces["events"][0]["recipient_hash"].is_string());
    assert_eq!(events_of(app, "recovery/delivery_reported").await.len(), 4);
}

#[tokio::test]
async fn postgres_opens_deliveries_and_hard_bounces_are_tracked_and_a_hard_bounce_suppresses() {
    deliverability(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_opens_deliveries_and_hard_bounces_are_tracked_and_a_hard_bounce_suppresses() {
    deliverability(Kind::Sqlite).await;
}

/// A spam complaint suppresses the recipient; no further step is sent.
#[tokio::test]
async fn a_complaint_suppresses_the_recipient() {
    let m = started(Kind::Sqlite).await;
    let app = &m.app;
    let (_, message_id) = sent(&m, "cal@example.com").await;
    let now = app.clock.now().timestamp();
    let (_, reply) = deliver(
        app,
        json!([{"id": "c-1", "type": "complaint", "message_id": message_id}]),
        Some(now),
    )
    .await;
    assert_eq!(reply["recorded"], 1);
    m.project().await;
    let (_, list) = app.admin_get("/ocart/v1/recovery/suppression").await;
    assert_eq!(list["suppression"][0]["reason"], "complaint");
    app.clock.advance(Duration::days(3));
    m.dispatch().await;
    assert_eq!(outbox_emails(app).len(), 1);
}
