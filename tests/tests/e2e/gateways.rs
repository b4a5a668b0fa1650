//! The payment gateways surface: `GET /ocart/v1/gateways` and `ocart gateway status` (never a
//! credential), and Stripe's webhook about upsell charges (signature over the raw body,
//! redeliveries record nothing new, foreign payments ignored).

use ocart_domain::upsell::{acceptance_id, AcceptInput, OrderStrategy, UpsellCommand, UpsellKind};
use ocart_domain::{Clock, Currency, Money, ProductId};
use ocart_projections::{CommandMeta, Db};
use ocart_tests::{ocart, spawn_app, spawn_app_with, FakePayPal, Kind, TestApp};
use serde_json::{json, Value};

const WHSEC: &str = "whsec_ocart_gateways_test";

fn with_stripe(config: &mut ocart_api::Config) {
    // Nothing listens on port 9: every charge the charger tries is unknown, never a decline,
    // so only the webhook decides these acceptances.
    config.gateways.stripe = Some(
        serde_json::from_value(json!({
            "secret_key": "sk_test_never_shown",
            "webhook_secrets": ["whsec_old", WHSEC],
            "api_base": "http://127.0.0.1:9",
            "timeout_secs": 1,
        }))
        .expect("stripe config"),
    );
}

/// The events of one type in the log, oldest first, as JSON (read from the table: the global
/// reader may hold back events behind transactions still open elsewhere on the server).
pub async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    let sql = "SELECT payload FROM events WHERE event_type = $1 ORDER BY global_position";
    let rows: Vec<(String,)> = match &app.core.db {
        Db::Pg(pool) => sqlx::query_as(&sql.replace("payload", "payload::text"))
            .bind(event_type)
            .fetch_all(pool)
            .await
            .expect("events"),
        Db::Lite(pool) => sqlx::query_as(sql)
            .bind(event_type)
            .fetch_all(pool)
            .await
            .expect("events"),
    };
    rows.into_iter()
        .map(|(payload,)| serde_json::from_str(&payload).expect("payload"))
        .collect()
}

/// An acceptance of a charge through `gateway` with `method`, recorded as the accept use case
/// records it.
async fn accepted_charge(app: &TestApp, order: &str, gateway: &str, method: &str) -> String {
    let meta = CommandMeta::system("test", None, app.clock.now());
    let usd = Currency::parse("currency", "USD").unwrap();
    let input = AcceptInput {
        offer_id: "offer-1".into(),
        kind: UpsellKind::Upsell,
        funnel_id: "main".into(),
        step: "upsell".into(),
        parent_order_id: order.into(),
        jti: format!("jti-{order}"),
        product_id: ProductId::text("77").unwrap(),
        product_name: "Mug warmer".into(),
        quantity: 1,
        price: Money::new(1999, usd).unwrap(),
        gateway: gateway.into(),
        customer: (gateway == "stripe").then(|| "cus_1".into()),
        payment_method: method.into(),
        strategy: OrderStrategy::A,
        request_key: None,
        request_hash: None,
        at: app.clock.now(),
    };
    let id = acceptance_id(order, "main", "upsell");
    app.core
        .acceptances
        .execute(&id, UpsellCommand::Accept(Box::new(input)), &meta)
        .await
        .expect("accept");
    id
}

fn intent_event(event_id: &str, kind: &str, intent: &str, acceptance: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": event_id,
        "object": "event",
        "type": kind,
        "data": {"object": {
            "id": intent,
            "object": "payment_intent",
            "status": if kind == "payment_intent.succeeded" { "succeeded" } else { "requires_payment_method" },
            "metadata": {"ocart_acceptance_id": acceptance},
            "last_payment_error": if kind == "payment_intent.succeeded" { Value::Null } else { json!({"code": "card_declined", "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}) },
        }}
    }))
    .unwrap()
}

async fn deliver(app: &TestApp, body: &[u8], signature: Option<String>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/ocart/v1/webhooks/stripe"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    ocart_tests::read(request.send().await.expect("deliver")).await
}

fn signed(app: &TestApp, body: &[u8], secret: &str) -> String {
    ocart_api::gateways::stripe_signature::sign(body, secret, app.clock.now().timestamp())
}

#[tokio::test]
async fn the_gateways_list_shows_state_and_never_a_credential() {
    let app = spawn_app(Kind::Sqlite).await;
    let (status, body) = app.admin_get("/ocart/v1/gateways").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["gateways"],
        json!([{"id": "sandbox", "mode": "sandbox", "api_base": "in-process", "webhooks": false}]),
        "the embedded default charges through the sandbox"
    );
    let (_, reader) = app.token_with(&["ocart_manage_recovery"]).await;
    assert_eq!(app.get("/ocart/v1/gateways", &reader).await.0, 403);

    let app = spawn_app_with(Kind::Sqlite, with_stripe).await;
    let (_, body) = app.admin_get("/ocart/v1/gateways").await;
    let ids: Vec<&str> = body["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["sandbox", "stripe"]);
    assert_eq!(body["gateways"][1]["mode"], "test");
    assert_eq!(body["gateways"][1]["webhooks"], true);
    assert!(!body.to_string().contains("sk_test_never_shown"), "{body}");
    assert!(!body.to_string().contains("whsec_"), "{body}");

    let (code, out, err) = ocart(&app.db, &["gateway", "status", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(listed["gateways"][0]["id"], "sandbox");
}

async fn webhook_records_once_on(kind: Kind) {
    let app = spawn_app_with(kind, with_stripe).await;
    let acceptance = accepted_charge(&app, "5001", "stripe", "pm_card_visa").await;
    let body = intent_event("evt_1", "payment_intent.succeeded", "pi_1", &acceptance);

    assert_eq!(deliver(&app, &body, None).await.0, 401, "unsigned");
    let (status, problem) = deliver(&app, &body, Some(signed(&app, &body, "whsec_wrong"))).await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem["status"], 401);
    let stale = ocart_api::gateways::stripe_signature::sign(
        &body,
        WHSEC,
        app.clock.now().timestamp() - 301,
    );
    assert_eq!(
        deliver(&app, &body, Some(stale)).await.0,
        401,
        "outside the tolerance"
    );
    assert!(events_of(&app, "upsell/charge_succeeded").await.is_empty());

    let (status, reply) = deliver(&app, &body, Some(signed(&app, &body, WHSEC))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"], "recorded");
    assert_eq!(reply["acceptance_id"], acceptance.as_str());
    // The old secret still verifies while it rolls.
    let (status, reply) = deliver(&app, &body, Some(signed(&app, &body, "whsec_old"))).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"], "unchanged", "a redelivery records nothing");
    let failed = intent_event(
        "evt_2",
        "payment_intent.payment_failed",
        "pi_1",
        &acceptance,
    );
    let (_, reply) = deliver(&app, &failed, Some(signed(&app, &failed, WHSEC))).await;
    assert_eq!(
        reply["result"], "unchanged",
        "a decided charge stays decided"
    );
    let succeeded = events_of(&app, "upsell/charge_succeeded").await;
    assert_eq!(succeeded.len(), 1, "{succeeded:?}");
    assert_eq!(succeeded[0]["charge_ref"], "pi_1");
    assert!(events_of(&app, "upsell/charge_declined").await.is_empty());

    // A payment OCart did not make, and an event type it does not act on.
    let foreign = intent_event(
        "evt_3",
        "payment_intent.succeeded",
        "pi_x",
        "acc_00000000000000000000000000000000",
    );
    let (_, reply) = deliver(&app, &foreign, Some(signed(&app, &foreign, WHSEC))).await;
    assert_eq!(reply["result"], "ignored");
    let other = serde_json::to_vec(
        &json!({"id": "evt_4", "type": "charge.refunded", "data": {"object": {"id": "ch_1"}}}),
    )
    .unwrap();
    let (_, reply) = deliver(&app, &other, Some(signed(&app, &other, WHSEC))).await;
    assert_eq!(reply["result"], "ignored");
    let garbage = b"{not json";
    let (status, problem) = deliver(&app, garbage, Some(signed(&app, garbage, WHSEC))).await;
    assert_eq!(status, 400, "{problem}");

    // A decline delivered for another acceptance is recorded as its decline.
    let second = accepted_charge(&app, "5002", "stripe", "pm_card_visa").await;
    let declined = intent_event("evt_5", "payment_intent.payment_failed", "pi_2", &second);
    let (_, reply) = deliver(&app, &declined, Some(signed(&app, &declined, WHSEC))).await;
    assert_eq!(reply["result"], "recorded");
    let declines = events_of(&app, "upsell/charge_declined").await;
    assert_eq!(declines.len(), 1);
    assert_eq!(declines[0]["code"], "insufficient_funds");
}

#[tokio::test]
async fn a_stripe_webhook_records_its_outcome_once_pg() {
    webhook_records_once_on(Kind::Postgres).await;
}

#[tokio::test]
async fn a_stripe_webhook_records_its_outcome_once_lite() {
    webhook_records_once_on(Kind::Sqlite).await;
}

#[tokio::test]
async fn stripe_webhooks_need_a_signing_secret() {
    let app = spawn_app(Kind::Sqlite).await;
    let body = intent_event("evt_1", "payment_intent.succeeded", "pi_1", "acc_x");
    let (status, problem) = deliver(&app, &body, Some("t=1,v1=00".into())).await;
    assert_eq!(status, 503, "{problem}");
}

/// A PayPal capture event for `order_id` of `acceptance`, with the headers PayPal sends, signed
/// the way the fake's `verify-webhook-signature` checks.
fn paypal_capture(
    kind: &str,
    order_id: &str,
    acceptance: &str,
) -> (Vec<u8>, Vec<(String, String)>) {
    let body = serde_json::to_vec(&json!({
        "id": format!("WH-{order_id}-{kind}"),
        "event_type": kind,
        "resource_type": "capture",
        "resource": {
            "id": format!("CAP-{order_id}"),
            "status": if kind.ends_with("COMPLETED") { "COMPLETED" } else { "DECLINED" },
            "custom_id": acceptance,
            "invoice_id": acceptance,
            "supplementary_data": {"related_ids": {"order_id": order_id}},
        },
    }))
    .unwrap();
    let transmission = format!("tx-{order_id}-{kind}");
    let headers = vec![
        ("PAYPAL-AUTH-ALGO".to_owned(), "SHA256withRSA".to_owned()),
        (
            "PAYPAL-CERT-URL".to_owned(),
            "https://api-m.sandbox.paypal.com/v1/notifications/certs/CERT-1".to_owned(),
        ),
        ("PAYPAL-TRANSMISSION-ID".to_owned(), transmission.clone()),
        (
            "PAYPAL-TRANSMISSION-SIG".to_owned(),
            FakePayPal::sign(&transmission, &body),
        ),
        (
            "PAYPAL-TRANSMISSION-TIME".to_owned(),
            "2026-03-01T09:00:01Z".to_owned(),
        ),
    ];
    (body, headers)
}

async fn deliver_paypal(app: &TestApp, body: &[u8], headers: &[(String, String)]) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url("/ocart/v1/webhooks/paypal"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(name.as_str(), value.as_str());
    }
    ocart_tests::read(request.send().await.expect("deliver")).await
}

#[tokio::test]
async fn a_paypal_webhook_is_verified_by_paypal_and_recorded_once() {
    let paypal = FakePayPal::start().await;
    let app = spawn_app_with(Kind::Sqlite, |c| paypal.configure(c)).await;
    let acceptance = accepted_charge(&app, "6001", "stripe", "pm_card_visa").await;
    let (body, headers) = paypal_capture("PAYMENT.CAPTURE.COMPLETED", "ORDER-1", &acceptance);

    let mut forged = headers.clone();
    forged[3].1 = "0".repeat(64);
    let (status, problem) = deliver_paypal(&app, &body, &forged).await;
    assert_eq!(status, 401, "a delivery PayPal does not verify: {problem}");
    let (status, _) = deliver_paypal(&app, &body, &headers[..2]).await;
    assert_eq!(status, 401, "without the transmission headers");
    assert!(events_of(&app, "upsell/charge_succeeded").await.is_empty());

    let (status, reply) = deliver_paypal(&app, &body, &headers).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["result"], "recorded");
    let (_, reply) = deliver_paypal(&app, &body, &headers).await;
    assert_eq!(reply["result"], "unchanged", "a redelivery records nothing");
    let succeeded = events_of(&app, "upsell/charge_succeeded").await;
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0]["charge_ref"], "ORDER-1");

    let (other, headers) = paypal_capture("BILLING.PLAN.CREATED", "ORDER-2", &acceptance);
    assert_eq!(
        deliver_paypal(&app, &other, &headers).await.1["result"],
        "ignored"
    );

    let bare = spawn_app(Kind::Sqlite).await;
    assert_eq!(
        deliver_paypal(&bare, &body, &headers).await.0,
        503,
        "PayPal is not set up there"
    );
}

#[tokio::test]
async fn the_return_from_3ds_reads_the_payment_back_and_never_believes_the_query() {
    let app = spawn_app(Kind::Sqlite).await;
    let id = accepted_charge(&app, "7001", "sandbox", "pm_sandbox_3ds").await;
    app.eventually(&format!("/ocart/v1/upsells/acceptances/{id}"), |a| {
        a["status"] == "requires_action"
    })
    .await;
    let charge_ref = events_of(&app, "upsell/charge_requires_action").await[0]["charge_ref"]
        .as_str()
        .unwrap()
        .to_owned();
    let back = |query: &'static str| {
        let url = app.url(&format!("/ocart/v1/upsells/acceptances/{id}/return{query}"));
        let client = app.client.clone();
        async move {
            let response = client.get(url).send().await.expect("return");
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    // The browser claims success; the gateway has not seen the shopper authenticate.
    let (status, page) = back("?payment_intent=x&redirect_status=succeeded").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("still needs you to confirm"), "{page}");
    assert!(events_of(&app, "upsell/charge_succeeded").await.is_empty());

    assert!(app
        .core
        .gateways
        .sandbox()
        .unwrap()
        .authenticate(&charge_ref));
    let (status, page) = back("").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("payment is confirmed"), "{page}");
    app.eventually(&format!("/ocart/v1/upsells/acceptances/{id}"), |a| {
        a["status"] == "accepted"
    })
    .await;
    assert_eq!(events_of(&app, "upsell/charge_succeeded").await.len(), 1);
    assert_eq!(app.core.gateways.sandbox().unwrap().succeeded_charges(), 1);

    let (status, _) = back("").await;
    assert_eq!(status, 200, "a second return records nothing more");
    assert_eq!(events_of(&app, "upsell/charge_succeeded").await.len(), 1);
    let missing = app
        .client
        .get(app.url("/ocart/v1/upsells/acceptances/acc_00000000000000000000000000000000/return"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let odd = app
        .client
        .get(app.url("/ocart/v1/upsells/acceptances/%E2%9C%93/return"))
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status().as_u16(), 404);
}
