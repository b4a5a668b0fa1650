//! One-click upsells over HTTP: the token, the hosted page, accept with idempotency at every
//! layer (the same key and body answer the same, another body 422, another key 409 with the
//! decision), 100 concurrent accepts making one decision, the refusals (tampered, expired,
//! foreign token, unpaid parent, archived offer) recording nothing, the decline leading to the
//! downsell with a fresh token, and the form POST's 303. The charge itself is the charger's.

use std::sync::Arc;

use chrono::Duration;
use ocart_domain::order::{order_id_for, OrderCommand, OrderFacts, PaymentRef};
use ocart_domain::upsell::{acceptance_id, charge_key, ChargeResult, UpsellCommand};
use ocart_domain::Currency;
use ocart_projections::CommandMeta;
use ocart_tests::{read, spawn_app, Kind, TestApp};
use serde_json::{json, Value};

const FUNNEL: &str = "main";

struct Setup {
    app: TestApp,
    upsell: String,
    downsell: String,
}

fn meta(app: &TestApp) -> CommandMeta {
    CommandMeta {
        actor: "test".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        causation_id: None,
        ip: None,
        at: app.clock.now_utc(),
    }
}

trait NowUtc {
    fn now_utc(&self) -> chrono::DateTime<chrono::Utc>;
}

impl NowUtc for ocart_domain::ManualClock {
    fn now_utc(&self) -> chrono::DateTime<chrono::Utc> {
        ocart_domain::Clock::now(self)
    }
}

/// Records the store's order `order_id` as the store reports it (the order API has no
/// `payment` field yet, so through the aggregate).
async fn record_order(app: &TestApp, order_id: &str, paid: bool, minutes: i64) {
    record_order_paid_by(app, order_id, paid, minutes, "pm_sandbox_ok").await;
}

async fn record_order_paid_by(
    app: &TestApp,
    order_id: &str,
    paid: bool,
    minutes: i64,
    payment_method: &str,
) {
    let facts = OrderFacts {
        order_id: order_id.into(),
        status: if paid { "processing" } else { "cancelled" }.into(),
        paid,
        payment_method: Some("sandbox".into()),
        currency: Currency::parse("currency", "USD").unwrap(),
        total: 5000,
        email_hash: None,
        placed_at: ocart_tests::start_time(),
        source: "api".into(),
        coupon_codes: Vec::new(),
        modified_at: Some(ocart_tests::start_time() + Duration::minutes(minutes)),
        payment: Some(PaymentRef {
            gateway: "sandbox".into(),
            customer: None,
            payment_method: payment_method.into(),
        }),
        offer_lines: Vec::new(),
    };
    app.core
        .orders
        .execute(
            &order_id_for(order_id).to_string(),
            OrderCommand::Record {
                facts: Box::new(facts),
                attribution: None,
                at: app.clock.now_utc(),
            },
            &meta(app),
        )
        .await
        .expect("order recorded");
}

async fn create_offer(app: &TestApp, kind: &str, name: &str, price: i64, amount: i64) -> String {
    let (status, body) = app
        .post(
            "/ocart/v1/upsells",
            Some(&app.admin),
            &json!({
                "name": name, "currency": "USD", "kind": kind,
                "product": {"product_id": 77, "name": name, "price": price, "quantity": 1},
                "pricing": {"type": "price", "amount": amount},
                "display": {"headline": format!("{name} <today>"), "copy": "Just for you"}
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("offer id").to_owned()
}

async fn setup(kind: Kind) -> Setup {
    let app = spawn_app(kind).await;
    let upsell = create_offer(&app, "upsell", "Mug warmer", 2999, 1999).await;
    let downsell = create_offer(&app, "downsell", "Coaster", 1499, 999).await;
    let (status, body) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": FUNNEL, "name": "Main", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": upsell,
                 "branches": {"accepted": "thanks", "declined": "downsell"}},
                {"key": "downsell", "type": "downsell", "offer_id": downsell,
                 "branches": {"default": "thanks"}},
                {"key": "thanks", "type": "thank_you"}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    record_order(&app, "1001", true, 0).await;
    Setup {
        app,
        upsell,
        downsell,
    }
}

async fn issue(app: &TestApp, order_id: &str, step: &str) -> (u16, Value) {
    app.post(
        "/ocart/v1/upsells/issue-token",
        Some(&app.admin),
        &json!({"order_id": order_id, "funnel_id": FUNNEL, "step": step,
                "return_url": "https://shop.test/thanks?order=1001"}),
    )
    .await
}

async fn issue_token(app: &TestApp, order_id: &str, step: &str) -> String {
    let (status, body) = issue(app, order_id, step).await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

/// POSTs `body` (raw JSON text) to `path` with an optional idempotency key.
async fn post_raw(app: &TestApp, path: &str, key: Option<&str>, body: String) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(key) = key {
        req = req.header("Idempotency-Key", key);
    }
    read(req.send().await.expect("request")).await
}

fn accept_path(offer: &str) -> String {
    format!("/ocart/v1/upsells/{offer}/accept")
}

fn token_body(token: &str) -> String {
    json!({ "token": token }).to_string()
}

/// The event types of an acceptance's stream.
async fn stream(app: &TestApp, order_id: &str, step: &str) -> Vec<(String, Value)> {
    let id = acceptance_id(order_id, FUNNEL, step);
    app.core
        .log
        .load("upsell_acceptance", &id)
        .await
        .expect("stream")
        .into_iter()
        .map(|e| {
            let payload: Value = serde_json::from_str(e.payload.get()).unwrap_or(Value::Null);
            (e.event_type.clone(), payload)
        })
        .collect()
}

async fn before_charges(app: &TestApp, order_id: &str, step: &str) -> Vec<Value> {
    stream(app, order_id, step)
        .await
        .into_iter()
        .filter(|(t, _)| t == "upsell/before_charge")
        .map(|(_, p)| p)
        .collect()
}

fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("https://ocart.dev/problems/")
}

async fn accept_is_idempotent_and_decided_once(kind: Kind) {
    let Setup { app, upsell, .. } = setup(kind).await;
    let token = issue_token(&app, "1001", "upsell").await;

    let resp = app
        .client
        .get(app.url(&format!("/ocart/v1/upsells/page?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("19.99 USD"), "the price: {html}");
    assert!(html.contains("29.99"), "the regular price");
    assert!(html.contains("you save 10.00"), "the saving");
    assert!(html.contains("30 more minutes"), "the time left");
    assert!(
        html.contains("Mug warmer &lt;today&gt;"),
        "escaped headline"
    );
    assert!(!html.contains("<today>"), "never raw");
    assert!(html.contains(&format!("action=\"/ocart/v1/upsells/{upsell}/accept\"")));
    assert!(html.contains(&format!("action=\"/ocart/v1/upsells/{upsell}/decline\"")));
    assert!(html.contains(&format!("name=\"token\" value=\"{token}\"")));

    let id = acceptance_id("1001", FUNNEL, "upsell");
    let path = accept_path(&upsell);
    let (status, first) = post_raw(&app, &path, Some("key-1"), token_body(&token)).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["acceptance_id"], id.as_str());
    assert_eq!(first["status"], "processing");
    let charges = before_charges(&app, "1001", "upsell").await;
    assert_eq!(charges.len(), 1, "one upsell/before_charge");
    assert_eq!(charges[0]["idempotency_key"], charge_key(&id).as_str());
    assert_eq!(charges[0]["amount"], 1999);
    assert_eq!(charges[0]["payment_method"], "pm_sandbox_ok");

    let (status, again) = post_raw(&app, &path, Some("key-1"), token_body(&token)).await;
    assert_eq!(
        (status, &again),
        (202, &first),
        "the same key and body answer the same"
    );

    let other_body = format!("{{ \"token\": \"{token}\" }}");
    let (status, body) = post_raw(&app, &path, Some("key-1"), other_body).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_type(&body), "idempotency-key-reused");

    for key in [Some("key-2"), None] {
        let (status, body) = post_raw(&app, &path, key, token_body(&token)).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(problem_type(&body), "upsell-step-decided");
        assert_eq!(body["acceptance_id"], id.as_str());
        assert_eq!(body["acceptance"]["acceptance_id"], id.as_str());
        assert!(body["acceptance_status"].is_string(), "{body}");
    }
    assert_eq!(before_charges(&app, "1001", "upsell").await.len(), 1);

    // The acceptance, publicly with its token, or with a bearer token; neither: 401.
    let status_path = format!("/ocart/v1/upsells/acceptances/{id}?token={token}");
    let (status, view) = read(app.client.get(app.url(&status_path)).send().await.unwrap()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["amount"], 1999);
    assert_eq!(view["parent_order_id"], "1001");
    assert_eq!(view["step"], "upsell");
    let (status, _) = app
        .admin_get(&format!("/ocart/v1/upsells/acceptances/{id}"))
        .await;
    assert_eq!(status, 200);
    let (status, _) = read(
        app.client
            .get(app.url(&format!("/ocart/v1/upsells/acceptances/{id}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    let other = token_for_other_order(&app).await;
    let (status, body) = read(
        app.client
            .get(app.url(&format!("/ocart/v1/upsells/acceptances/{id}?token={other}")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "another step's token reads nothing: {body}");

    // The read table, once the projections caught up.
    app.settle().await;
    let row = ocart_projections::queries::upsells::get_acceptance(&app.core.db, &id)
        .await
        .unwrap()
        .expect("the acceptance's row");
    assert_eq!((row.amount, row.offer_id.as_str()), (1999, upsell.as_str()));
    assert_eq!(row.kind, "upsell");
}

async fn token_for_other_order(app: &TestApp) -> String {
    record_order(app, "1077", true, 0).await;
    issue_token(app, "1077", "upsell").await
}

#[tokio::test]
async fn accept_is_idempotent_and_decided_once_pg() {
    accept_is_idempotent_and_decided_once(Kind::Postgres).await;
}

#[tokio::test]
async fn accept_is_idempotent_and_decided_once_lite() {
    accept_is_idempotent_and_decided_once(Kind::Sqlite).await;
}

async fn concurrent_accepts_make_one_decision(kind: Kind) {
    let Setup { app, upsell, .. } = setup(kind).await;
    record_order(&app, "1002", true, 0).await;
    let app = Arc::new(app);
    for (order_id, same_key) in [("1001", true), ("1002", false)] {
        let token = issue_token(&app, order_id, "upsell").await;
        let mut tasks = Vec::new();
        for i in 0..100 {
            let app = app.clone();
            let (path, body) = (accept_path(&upsell), token_body(&token));
            let key = if same_key {
                "one-key".to_owned()
            } else {
                format!("key-{i}")
            };
            tasks.push(tokio::spawn(async move {
                post_raw(&app, &path, Some(&key), body).await
            }));
        }
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task"));
        }
        let accepted: Vec<&Value> = answers
            .iter()
            .filter(|(s, _)| *s == 202)
            .map(|(_, b)| b)
            .collect();
        assert!(!accepted.is_empty(), "{order_id}: one accept went through");
        assert!(
            accepted.iter().all(|b| *b == accepted[0]),
            "{order_id}: every 202 is the identical answer"
        );
        if !same_key {
            assert_eq!(accepted.len(), 1, "different keys: one decision");
        }
        for (status, body) in &answers {
            assert!(
                *status == 202 || *status == 409,
                "{order_id}: {status} {body}"
            );
        }
        assert_eq!(
            before_charges(&app, order_id, "upsell").await.len(),
            1,
            "{order_id}: exactly one upsell/before_charge"
        );
    }
}

#[tokio::test]
async fn concurrent_accepts_make_one_decision_pg() {
    concurrent_accepts_make_one_decision(Kind::Postgres).await;
}

#[tokio::test]
async fn concurrent_accepts_make_one_decision_lite() {
    concurrent_accepts_make_one_decision(Kind::Sqlite).await;
}

async fn refusals_record_nothing(kind: Kind) {
    let Setup {
        app,
        upsell,
        downsell,
    } = setup(kind).await;
    let path = accept_path(&upsell);

    // Tampered: the claims changed under the signature.
    let token = issue_token(&app, "1001", "upsell").await;
    let (payload, sig) = token.split_once('.').unwrap();
    let mut bytes = payload.as_bytes().to_vec();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{}.{sig}", String::from_utf8(bytes).unwrap());
    for (bad, label) in [(tampered, "tampered"), ("garbage".to_owned(), "malformed")] {
        let (status, body) = post_raw(&app, &path, None, token_body(&bad)).await;
        assert_eq!(status, 401, "{label}: {body}");
        assert_eq!(problem_type(&body), "upsell-token-invalid", "{label}");
    }

    // Foreign: a valid token for another offer.
    let (status, body) = post_raw(&app, &accept_path(&downsell), None, token_body(&token)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(problem_type(&body), "upsell-token-foreign");

    // Expired.
    app.clock.advance(Duration::minutes(30));
    let (status, body) = post_raw(&app, &path, None, token_body(&token)).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(problem_type(&body), "upsell-token-expired");
    let page = app
        .client
        .get(app.url(&format!("/ocart/v1/upsells/page?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 410, "the page of an expired token");
    assert_eq!(before_charges(&app, "1001", "upsell").await.len(), 0);

    // Unpaid parent: paid when the token was issued, cancelled since.
    record_order(&app, "1003", true, 0).await;
    let token = issue_token(&app, "1003", "upsell").await;
    record_order(&app, "1003", false, 10).await;
    let (status, body) = post_raw(&app, &path, None, token_body(&token)).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(problem_type(&body), "upsell-parent-unpaid");
    let (status, body) = issue(&app, "1003", "upsell").await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "upsell-parent-unpaid"),
        "no token for an unpaid order"
    );
    assert_eq!(before_charges(&app, "1003", "upsell").await.len(), 0);

    // Ineligible: the offer archived after the token was issued.
    record_order(&app, "1004", true, 0).await;
    let token = issue_token(&app, "1004", "upsell").await;
    let resp = app
        .client
        .delete(app.url(&format!("/ocart/v1/upsells/{upsell}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "archived: {}", resp.status());
    let (status, body) = post_raw(&app, &path, None, token_body(&token)).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(problem_type(&body), "upsell-offer-ineligible");
    assert_eq!(before_charges(&app, "1004", "upsell").await.len(), 0);
    let (status, body) = issue(&app, "1004", "upsell").await;
    assert_eq!(
        (status, problem_type(&body)),
        (422, "upsell-offer-ineligible")
    );

    // Unknown order: no token.
    let (status, _) = issue(&app, "9999", "upsell").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn refusals_record_nothing_pg() {
    refusals_record_nothing(Kind::Postgres).await;
}

#[tokio::test]
async fn refusals_record_nothing_lite() {
    refusals_record_nothing(Kind::Sqlite).await;
}

async fn declining_leads_to_the_downsell(kind: Kind) {
    let Setup {
        app,
        upsell,
        downsell,
    } = setup(kind).await;
    let token = issue_token(&app, "1001", "upsell").await;
    let path = format!("/ocart/v1/upsells/{upsell}/decline");
    let (status, first) = post_raw(&app, &path, Some("d-1"), token_body(&token)).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "declined_by_shopper");
    assert_eq!(first["next"]["step"], "downsell");
    assert_eq!(first["next"]["offer_id"], downsell.as_str());
    let (status, again) = post_raw(&app, &path, Some("d-1"), token_body(&token)).await;
    assert_eq!((status, &again), (200, &first), "a repeat answers the same");
    let events: Vec<String> = stream(&app, "1001", "upsell")
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    assert_eq!(events, ["upsell/declined"]);
    let (status, body) = post_raw(&app, &accept_path(&upsell), None, token_body(&token)).await;
    assert_eq!(
        (status, problem_type(&body)),
        (409, "upsell-step-decided"),
        "a declined step cannot be accepted"
    );

    // The downsell's page, with the fresh token.
    let next = first["next"]["token"].as_str().unwrap().to_owned();
    let html = app
        .client
        .get(app.url(&format!("/ocart/v1/upsells/page?token={next}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("9.99 USD"), "{html}");

    // A form POST accept answers 303 to the hosted page.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = no_redirects
        .post(app.url(&accept_path(&downsell)))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={next}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.ends_with(&format!("/ocart/v1/upsells/page?token={next}")),
        "{location}"
    );
    assert_eq!(before_charges(&app, "1001", "downsell").await.len(), 1);
    // The page shows the decision now, not the offer.
    let html = app
        .client
        .get(app.url(&format!("/ocart/v1/upsells/page?token={next}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("ocart-accept"), "no second accept form");
    assert!(html.contains("data-shown="), "{html}");

    // Declining the last offer leads back to the store.
    record_order(&app, "1005", true, 0).await;
    let last = issue_token(&app, "1005", "downsell").await;
    let (status, body) = post_raw(
        &app,
        &format!("/ocart/v1/upsells/{downsell}/decline"),
        None,
        token_body(&last),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["next"], Value::Null);
    assert_eq!(body["return_url"], "https://shop.test/thanks?order=1001");
}

#[tokio::test]
async fn declining_leads_to_the_downsell_pg() {
    declining_leads_to_the_downsell(Kind::Postgres).await;
}

#[tokio::test]
async fn declining_leads_to_the_downsell_lite() {
    declining_leads_to_the_downsell(Kind::Sqlite).await;
}

/// `GET /upsells/acceptances/{id}?status=…&wait=…` is a long poll: it answers once the status
/// has moved on from the one named (woken by the record of the change, not by polling), at once
/// when it has moved on already, and refuses a wait or a status out of bounds.
async fn the_status_read_waits_for_a_change(kind: Kind) {
    let Setup { app, upsell, .. } = setup(kind).await;
    // A card that wants 3DS: the charger leaves the acceptance waiting on the shopper.
    record_order_paid_by(&app, "1002", true, 0, "pm_sandbox_3ds").await;
    let token = issue_token(&app, "1002", "upsell").await;
    let (status, body) =
        post_raw(&app, &accept_path(&upsell), Some("k-1"), token_body(&token)).await;
    assert_eq!(status, 202, "{body}");
    let id = body["acceptance_id"]
        .as_str()
        .expect("acceptance id")
        .to_owned();
    let path = |query: &str| format!("/ocart/v1/upsells/acceptances/{id}?token={token}{query}");

    // Waiting on `charging`: the answer is the charger's `requires_action`.
    let (status, body) = app.get(&path("&status=charging&wait=20"), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "requires_action", "{body}");
    // No change to wait for: at once, as without the parameters.
    let (status, body) = app.get(&path("&status=succeeded&wait=20"), "").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("requires_action")),
        "{body}"
    );
    let (status, body) = app.get(&path("&status=requires_action&wait=0"), "").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("requires_action")),
        "{body}"
    );

    // Waiting on `requires_action`: the answer is the charge recorded after the shopper's 3DS.
    let waiting = {
        let (client, url) = (
            app.client.clone(),
            app.url(&path("&status=requires_action&wait=20")),
        );
        tokio::spawn(async move { read(client.get(url).send().await.expect("request")).await })
    };
    // Let the poll start first (were it to start later, it would answer at once: the same).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.core
        .acceptances
        .execute(
            &id,
            UpsellCommand::RecordCharge {
                result: ChargeResult::Succeeded {
                    charge_ref: "sb_long_poll".into(),
                },
                at: app.clock.now_utc(),
            },
            &meta(&app),
        )
        .await
        .expect("record the charge");
    let (status, body) = waiting.await.expect("the poll");
    assert_eq!(status, 200, "{body}");
    assert!(
        matches!(body["status"].as_str(), Some("succeeded" | "accepted")),
        "{body}"
    );
    assert_eq!(body["charge_ref"], "sb_long_poll", "{body}");

    for (query, field) in [
        ("&status=charging&wait=31", "wait"),
        ("&status=charging&wait=99999999999999999999", "wait"),
        ("&status=paid", "status"),
    ] {
        let (status, body) = app.get(&path(query), "").await;
        assert!(matches!(status, 400 | 422), "{query}: {status} {body}");
        assert!(
            body["detail"].as_str().unwrap_or_default().contains(field),
            "{query}: {body}"
        );
    }
}

#[tokio::test]
async fn the_status_read_waits_for_a_change_pg() {
    the_status_read_waits_for_a_change(Kind::Postgres).await;
}

#[tokio::test]
async fn the_status_read_waits_for_a_change_lite() {
    the_status_read_waits_for_a_change(Kind::Sqlite).await;
}
