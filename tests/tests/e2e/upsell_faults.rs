//! One-click upsells end to end through HTTP with the charger running, against the fake
//! gateways the app is configured with (FakeStripe, FakePayPal) and FakeWoo as the store: a
//! Stripe charge whose answer is lost is never shown declined and ends with one charge and
//! one child order; PayPal accepts, declines, downsells and payer actions; 3DS through the
//! hosted page with Stripe (the browser's claim never believed) and with the sandbox on the
//! embedded default config; and refusals that reach no gateway.

use std::time::Duration;

use ocart_domain::upsell::{acceptance_id, charge_key};
use ocart_domain::{Currency, Money};
use ocart_processors::gateways::{ChargeOutcome, ChargeRequest};
use ocart_tests::{
    read, spawn_app, spawn_app_with, FakePayPal, FakeStripe, FakeWoo, Kind, TestApp, PM_3DS,
    PM_VISA, VAULT_DECLINED, VAULT_OK, VAULT_PAYER_ACTION,
};
use serde_json::{json, Value};

use crate::gateways::events_of;

const FUNNEL: &str = "main";
/// What the test config's `recovery.public_url` puts in front of every link the app makes.
const PUBLIC_URL: &str = "https://ocart.shop.test";

struct Shop {
    app: TestApp,
    upsell: String,
    downsell: String,
}

async fn offer(app: &TestApp, kind: &str, name: &str, price: i64, amount: i64) -> String {
    let (status, body) = app
        .post(
            "/ocart/v1/upsells",
            Some(&app.admin),
            &json!({"name": name, "currency": "USD", "kind": kind,
                    "product": {"product_id": 77, "name": name, "price": price, "quantity": 1},
                    "pricing": {"type": "price", "amount": amount}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("offer id").to_owned()
}

/// The app configured by `configure`, with an upsell (19.99 USD) whose decline leads to a
/// downsell (9.99 USD), in the active funnel `main`.
async fn shop(kind: Kind, configure: impl FnOnce(&mut ocart_api::Config)) -> Shop {
    let app = spawn_app_with(kind, configure).await;
    let upsell = offer(&app, "upsell", "Mug warmer", 2999, 1999).await;
    let downsell = offer(&app, "downsell", "Coaster", 1499, 999).await;
    let (status, body) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": FUNNEL, "name": "Main", "status": "active", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": upsell,
                 "branches": {"accepted": "thanks", "declined": "downsell"}},
                {"key": "downsell", "type": "downsell", "offer_id": downsell,
                 "branches": {"default": "thanks"}},
                {"key": "thanks", "type": "thank_you"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    Shop {
        app,
        upsell,
        downsell,
    }
}

/// [`shop`] charging through a `FakeStripe`, with `FakeWoo` as the store.
async fn stripe_shop(kind: Kind) -> (FakeStripe, FakeWoo, Shop) {
    let stripe = FakeStripe::start().await;
    let woo = FakeWoo::start().await;
    let shop = shop(kind, |c| {
        stripe.configure(c);
        woo.configure(c);
    })
    .await;
    (stripe, woo, shop)
}

/// Records the store's order `order_id` through the order API, with its saved payment.
async fn store_order(
    app: &TestApp,
    order_id: &str,
    status: &str,
    minutes: i64,
    payment: (&str, Option<&str>, &str),
) {
    let (gateway, customer, method) = payment;
    let placed = ocart_tests::start_time();
    let (code, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({"order_id": order_id, "status": status, "currency": "USD", "total": 5000,
                    "placed_at": placed,
                    "modified_at": placed + chrono::Duration::minutes(minutes),
                    "payment": {"gateway": gateway, "customer": customer, "payment_method": method}}),
        )
        .await;
    assert_eq!(code, 200, "{reply}");
}

async fn paid_order(app: &TestApp, order_id: &str, payment: (&str, Option<&str>, &str)) {
    store_order(app, order_id, "processing", 0, payment).await;
}

async fn issue_token(app: &TestApp, order_id: &str, step: &str) -> String {
    let (status, body) = app
        .post(
            "/ocart/v1/upsells/issue-token",
            Some(&app.admin),
            &json!({"order_id": order_id, "funnel_id": FUNNEL, "step": step,
                    "return_url": "https://shop.test/thanks"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

/// A JSON POST with an optional `Idempotency-Key`: status, `Content-Type`, body.
async fn post_json(
    app: &TestApp,
    path: &str,
    key: Option<&str>,
    body: &Value,
) -> (u16, String, Value) {
    let mut request = app.client.post(app.url(path)).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("request");
    let content_type = content_type(&response);
    let (status, body) = read(response).await;
    (status, content_type, body)
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Accepts `offer` with `token` (JSON, under `key`): answers the acceptance id.
async fn accept(app: &TestApp, offer: &str, token: &str, key: &str) -> String {
    let (status, _, body) = post_json(
        app,
        &format!("/ocart/v1/upsells/{offer}/accept"),
        Some(key),
        &json!({"token": token}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "processing");
    body["acceptance_id"]
        .as_str()
        .expect("acceptance id")
        .to_owned()
}

/// A browser without redirects followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The hosted page of `token`: status and HTML.
async fn page(app: &TestApp, token: &str) -> (u16, String) {
    let response = app
        .client
        .get(app.url(&format!("/ocart/v1/upsells/page?token={token}")))
        .send()
        .await
        .expect("page");
    let status = response.status().as_u16();
    (status, response.text().await.expect("html"))
}

/// HTML text as the browser reads it (minijinja escapes `/` too).
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of the first `attr="…"` after `after` in `html` (unescaped).
fn attribute(html: &str, after: &str, attr: &str) -> Option<String> {
    let html = unescape(html);
    let start = html.find(after)?;
    let rest = &html[start..];
    let marker = format!("{attr}=\"");
    let from = rest.find(&marker)? + marker.len();
    let value = &rest[from..];
    Some(value[..value.find('"')?].to_owned())
}

/// Where the hosted page of a step waiting for the shopper sends them (its `ocart-action` link).
fn action_link(html: &str) -> Option<String> {
    let html = unescape(html);
    let at = html.find("id=\"ocart-action\"")?;
    let start = html[..at].rfind("<a href=\"")? + "<a href=\"".len();
    Some(html[start..html[start..].find('"')? + start].to_owned())
}

/// What the hosted page shows of a decided step (`data-shown`).
fn shown_on_page(html: &str) -> Option<String> {
    attribute(html, "<body", "data-shown")
}

/// The acceptance as the shopper's page reads it (`?token=`).
async fn acceptance(app: &TestApp, id: &str, token: &str) -> Value {
    let (status, body) = read(
        app.client
            .get(app.url(&format!("/ocart/v1/upsells/acceptances/{id}?token={token}")))
            .send()
            .await
            .expect("acceptance"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls the acceptance's JSON and its hosted page until its status is `until` (bounded);
/// every status seen (JSON `status` and `shown_status`, the page's `data-shown`) must be in
/// `allowed`. Answers the last JSON and every status seen, in order.
async fn watch(
    app: &TestApp,
    id: &str,
    token: &str,
    until: &str,
    allowed: &[&str],
) -> (Value, Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    for _ in 0..600 {
        let view = acceptance(app, id, token).await;
        let (code, html) = page(app, token).await;
        assert_eq!(code, 200, "{html}");
        let on_page = shown_on_page(&html).unwrap_or_else(|| panic!("a decided page: {html}"));
        for status in [
            view["status"].as_str().unwrap_or_default(),
            view["shown_status"].as_str().unwrap_or_default(),
            on_page.as_str(),
        ] {
            assert!(
                allowed.contains(&status),
                "{id} showed {status:?} (allowed {allowed:?}); seen so far {seen:?}; {view}"
            );
            if seen.last().map(String::as_str) != Some(status) {
                seen.push(status.to_owned());
            }
        }
        if view["status"] == until {
            return (view, seen);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{id} never reached {until}; seen {seen:?}");
}

/// The one child order of `parent` at the store, once written (bounded wait).
async fn only_child(woo: &FakeWoo, parent: u64) -> Value {
    for _ in 0..400 {
        let children = woo.children_of(parent);
        if !children.is_empty() {
            assert_eq!(
                children.len(),
                1,
                "one child order of {parent}: {children:?}"
            );
            return children[0].clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no child order of {parent}");
}

fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("https://ocart.dev/problems/")
}

// ---- 1a. One slow charge holds up no other shopper ------------------------------------------

/// The first value of `sql`'s one column (0 when no row).
async fn scalar(app: &TestApp, sql: &str) -> i64 {
    let value: Option<(i64,)> = match app.core.log.db() {
        ocart_projections::Db::Pg(pool) => sqlx::query_as(sql).fetch_optional(pool).await,
        ocart_projections::Db::Lite(pool) => sqlx::query_as(sql).fetch_optional(pool).await,
    }
    .expect(sql);
    value.map_or(0, |(v,)| v)
}

/// Where the charger's checkpoint is (its position in the log).
async fn charger_checkpoint(app: &TestApp) -> i64 {
    scalar(
        app,
        "SELECT position FROM checkpoints WHERE name = 'upsell_charger'",
    )
    .await
}

async fn a_slow_charge_holds_up_no_other_shopper_on(kind: Kind) {
    let (stripe, woo, Shop { app, upsell, .. }) = stripe_shop(kind).await;
    paid_order(&app, "3101", ("stripe", Some("cus_ocart"), PM_VISA)).await;
    paid_order(&app, "3102", ("stripe", Some("cus_ocart"), PM_VISA)).await;
    let slow_token = issue_token(&app, "3101", "upsell").await;
    let fast_token = issue_token(&app, "3102", "upsell").await;

    // The first shopper's charge is made and its answer held at the gateway.
    stripe.hold_after_charge();
    let slow = accept(&app, &upsell, &slow_token, "slow-1").await;
    tokio::time::timeout(Duration::from_secs(20), stripe.until_held(1))
        .await
        .expect("the first charge reached the gateway");
    let slow_decision = scalar(
        &app,
        "SELECT global_position FROM events WHERE event_type = 'upsell/before_charge'",
    )
    .await;
    assert!(slow_decision > 0);
    stripe.stop_holding();

    // A second shopper accepts meanwhile: charged and ordered while the first is still out.
    let fast = accept(&app, &upsell, &fast_token, "fast-1").await;
    let (view, _) = watch(
        &app,
        &fast,
        &fast_token,
        "accepted",
        &["charging", "processing", "succeeded", "accepted"],
    )
    .await;
    assert!(view["child_order_id"].is_string(), "{view}");
    assert_eq!(
        acceptance(&app, &slow, &slow_token).await["status"],
        "charging"
    );
    // The checkpoint stays behind the decision still being charged, whatever came after it.
    assert!(
        charger_checkpoint(&app).await < slow_decision,
        "the charger's checkpoint passed an acceptance it has not finished"
    );

    stripe.release_holds();
    watch(
        &app,
        &slow,
        &slow_token,
        "accepted",
        &["charging", "processing", "succeeded", "accepted"],
    )
    .await;
    app.settle().await;
    assert_eq!(stripe.charges(), 2, "{:?}", stripe.requests());
    only_child(&woo, 3101).await;
    only_child(&woo, 3102).await;
    assert_eq!(events_of(&app, "upsell/accepted").await.len(), 2);
    assert!(charger_checkpoint(&app).await > slow_decision);
}

#[tokio::test]
async fn postgres_a_slow_charge_holds_up_no_other_shopper() {
    a_slow_charge_holds_up_no_other_shopper_on(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_slow_charge_holds_up_no_other_shopper() {
    a_slow_charge_holds_up_no_other_shopper_on(Kind::Sqlite).await;
}

// ---- 1. Stripe charges, then drops the connection -------------------------------------------

async fn a_lost_stripe_answer_is_never_shown_declined_on(kind: Kind) {
    let (stripe, woo, Shop { app, upsell, .. }) = stripe_shop(kind).await;
    paid_order(&app, "3001", ("stripe", Some("cus_ocart"), PM_VISA)).await;
    let token = issue_token(&app, "3001", "upsell").await;

    stripe.drop_after_charge(1);
    let id = accept(&app, &upsell, &token, "lost-1").await;
    assert_eq!(id, acceptance_id("3001", FUNNEL, "upsell"));
    let (view, seen) = watch(
        &app,
        &id,
        &token,
        "accepted",
        &["charging", "unknown", "processing", "succeeded", "accepted"],
    )
    .await;
    assert!(!seen.iter().any(|s| s.contains("declined")), "{seen:?}");

    // The lost answer was recorded as unknown, never as a decline; the replay found the charge.
    assert!(
        !events_of(&app, "upsell/charge_unknown").await.is_empty(),
        "the dropped answer was unknown"
    );
    assert!(events_of(&app, "upsell/charge_declined").await.is_empty());
    assert_eq!(
        stripe.charges(),
        1,
        "one charge at Stripe: {:?}",
        stripe.requests()
    );
    let creates: Vec<_> = stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/payment_intents")
        .collect();
    assert!(
        creates.len() >= 2,
        "the charge was asked again: {creates:?}"
    );
    let key = charge_key(&id);
    assert!(
        creates
            .iter()
            .all(|r| r.idempotency_key.as_deref() == Some(key.as_str())),
        "every create carries the acceptance's key"
    );
    let pi = view["charge_ref"].as_str().expect("charge ref").to_owned();
    assert_eq!(stripe.intent(&pi)["status"], "succeeded");
    assert_eq!(stripe.intent(&pi)["amount"], 1999);

    let child = only_child(&woo, 3001).await;
    assert_eq!(child["transaction_id"], pi.as_str());
    assert_eq!(child["payment_method"], "stripe");
    assert_eq!(child["line_items"][0]["total"], "19.99");
    assert_eq!(view["child_order_id"], child["id"].to_string().as_str());
    app.settle().await;
    assert_eq!(woo.children_of(3001).len(), 1);
    assert_eq!(events_of(&app, "upsell/accepted").await.len(), 1);
    assert_eq!(stripe.charges(), 1);
}

#[tokio::test]
async fn postgres_a_lost_stripe_answer_is_never_shown_declined() {
    a_lost_stripe_answer_is_never_shown_declined_on(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_lost_stripe_answer_is_never_shown_declined() {
    a_lost_stripe_answer_is_never_shown_declined_on(Kind::Sqlite).await;
}

// ---- 2. PayPal end to end -------------------------------------------------------------------

async fn paypal_end_to_end_on(kind: Kind) {
    let paypal = FakePayPal::start().await;
    let woo = FakeWoo::start().await;
    let Shop {
        app,
        upsell,
        downsell,
    } = shop(kind, |c| {
        paypal.configure(c);
        woo.configure(c);
    })
    .await;
    // Never declined; unknown only if an answer was slow.
    let charged = ["charging", "unknown", "processing", "succeeded", "accepted"];

    // Accepted, captured at PayPal under the acceptance's key, one child order.
    paid_order(&app, "4001", ("paypal", None, VAULT_OK)).await;
    let token = issue_token(&app, "4001", "upsell").await;
    let id = accept(&app, &upsell, &token, "pp-1").await;
    let (view, _) = watch(&app, &id, &token, "accepted", &charged).await;
    let key = charge_key(&id);
    let order = paypal
        .order_for_request_id(&key)
        .expect("an order created with PayPal-Request-Id = the acceptance's key");
    assert_eq!(view["charge_ref"], order.as_str());
    assert_eq!(view["gateway"], "paypal");
    let capture = paypal
        .order(&order)
        .and_then(|o| o.capture)
        .expect("captured")
        .id;
    assert_eq!(paypal.captures(), 1);
    let child = only_child(&woo, 4001).await;
    assert_eq!(
        child["transaction_id"],
        capture.as_str(),
        "the child order's transaction is PayPal's capture"
    );
    assert_eq!(child["payment_method"], "paypal");
    assert_eq!(view["child_order_id"], child["id"].to_string().as_str());

    // A replay with the same PayPal-Request-Id answers the same order and capture.
    let gateway = app.core.gateways.get("paypal").expect("paypal");
    let replay = gateway
        .charge(&ChargeRequest {
            idempotency_key: key.clone(),
            amount: Money::new(1999, Currency::parse("currency", "USD").unwrap()).unwrap(),
            customer: None,
            payment_method: VAULT_OK.into(),
            description: "Mug warmer".into(),
            invoice_id: id.clone(),
            return_url: None,
            metadata: vec![],
        })
        .await;
    assert_eq!(
        replay,
        ChargeOutcome::Succeeded {
            charge_ref: order.clone()
        }
    );
    assert_eq!((paypal.orders(), paypal.captures()), (1, 1));
    assert_eq!(paypal.order(&order).unwrap().capture.unwrap().id, capture);

    // Declined by the shopper → the downsell → accepted through PayPal.
    paid_order(&app, "4002", ("paypal", None, VAULT_OK)).await;
    let token = issue_token(&app, "4002", "upsell").await;
    let (status, _, declined) = post_json(
        &app,
        &format!("/ocart/v1/upsells/{upsell}/decline"),
        Some("pp-2"),
        &json!({ "token": token }),
    )
    .await;
    assert_eq!(status, 200, "{declined}");
    assert_eq!(declined["next"]["step"], "downsell");
    assert_eq!(declined["next"]["offer_id"], downsell.as_str());
    let next = declined["next"]["token"].as_str().unwrap().to_owned();
    let down = accept(&app, &downsell, &next, "pp-3").await;
    assert_eq!(down, acceptance_id("4002", FUNNEL, "downsell"));
    let (view, _) = watch(&app, &down, &next, "accepted", &charged).await;
    let child = only_child(&woo, 4002).await;
    assert_eq!(child["line_items"][0]["total"], "9.99");
    let order = paypal.order_for_request_id(&charge_key(&down)).unwrap();
    assert_eq!(view["charge_ref"], order.as_str());
    assert_eq!(paypal.order(&order).unwrap().value, "9.99");
    assert_eq!(
        acceptance(&app, &acceptance_id("4002", FUNNEL, "upsell"), &token).await["status"],
        "declined_by_shopper"
    );

    // INSTRUMENT_DECLINED: declined, no order.
    paid_order(&app, "4003", ("paypal", None, VAULT_DECLINED)).await;
    let token = issue_token(&app, "4003", "upsell").await;
    let id = accept(&app, &upsell, &token, "pp-4").await;
    let (view, _) = watch(
        &app,
        &id,
        &token,
        "declined",
        &["charging", "processing", "declined"],
    )
    .await;
    assert_eq!(view["child_order_id"], Value::Null);
    let declines = events_of(&app, "upsell/charge_declined").await;
    assert_eq!(declines.len(), 1, "{declines:?}");
    assert_eq!(declines[0]["code"], "INSTRUMENT_DECLINED");

    // PAYER_ACTION_REQUIRED: the payer's link; nothing charged until they approve.
    paid_order(&app, "4004", ("paypal", None, VAULT_PAYER_ACTION)).await;
    let token = issue_token(&app, "4004", "upsell").await;
    let id = accept(&app, &upsell, &token, "pp-5").await;
    let (view, _) = watch(
        &app,
        &id,
        &token,
        "requires_action",
        &["charging", "processing", "requires_action"],
    )
    .await;
    let order = paypal.order_for_request_id(&charge_key(&id)).unwrap();
    let action_url = view["action_url"].as_str().expect("the payer's link");
    assert!(
        action_url.ends_with(&format!("checkoutnow?token={order}")),
        "{action_url}"
    );
    let (_, html) = page(&app, &token).await;
    assert_eq!(action_link(&html), Some(action_url.to_owned()), "{html}");
    let confirm = json!({"acceptance_id": id, "token": token});
    let (status, _, early) = post_json(&app, "/ocart/v1/upsells/confirm", None, &confirm).await;
    assert_eq!(status, 200, "{early}");
    assert_eq!(early["status"], "requires_action", "not approved yet");
    assert_eq!(
        paypal.order(&order).unwrap().status,
        "PAYER_ACTION_REQUIRED"
    );

    assert!(paypal.approve(&order));
    let (status, _, confirmed) = post_json(&app, "/ocart/v1/upsells/confirm", None, &confirm).await;
    assert_eq!(status, 200, "{confirmed}");
    assert!(
        ["succeeded", "accepted"].contains(&confirmed["status"].as_str().unwrap_or_default()),
        "{confirmed}"
    );
    assert_eq!(
        paypal.captured_by_request_id(&format!("{}-capture", charge_key(&id))),
        Some(order.clone()),
        "captured under the acceptance's key"
    );
    let (view, _) = watch(&app, &id, &token, "accepted", &charged).await;
    let capture = paypal.order(&order).unwrap().capture.unwrap().id;
    let child = only_child(&woo, 4004).await;
    assert_eq!(child["transaction_id"], capture.as_str());
    assert_eq!(view["child_order_id"], child["id"].to_string().as_str());

    app.settle().await;
    assert!(woo.children_of(4003).is_empty(), "no order for a decline");
    assert_eq!(paypal.captures(), 3, "4001, 4002's downsell, 4004");
    assert_eq!(events_of(&app, "upsell/accepted").await.len(), 3);
    assert_eq!(woo.orders_created(), 3);
}

#[tokio::test]
async fn postgres_paypal_accept_downsell_decline_and_payer_action() {
    paypal_end_to_end_on(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_paypal_accept_downsell_decline_and_payer_action() {
    paypal_end_to_end_on(Kind::Sqlite).await;
}

// ---- 3. 3DS through the hosted page ---------------------------------------------------------

async fn stripe_3ds_through_the_page_on(kind: Kind) {
    let (stripe, woo, Shop { app, upsell, .. }) = stripe_shop(kind).await;
    paid_order(&app, "5001", ("stripe", Some("cus_ocart"), PM_3DS)).await;
    let token = issue_token(&app, "5001", "upsell").await;
    let id = accept(&app, &upsell, &token, "3ds-1").await;
    let (view, _) = watch(
        &app,
        &id,
        &token,
        "requires_action",
        &["charging", "processing", "requires_action"],
    )
    .await;
    let pi = view["charge_ref"]
        .as_str()
        .expect("the PaymentIntent")
        .to_owned();
    let intent = stripe.intent(&pi);
    assert_eq!(intent["status"], "requires_action");
    let redirect = intent["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(view["action_url"], redirect.as_str(), "Stripe's own page");
    assert_eq!(
        intent["next_action"]["redirect_to_url"]["return_url"],
        format!("{PUBLIC_URL}/ocart/v1/upsells/acceptances/{id}/return").as_str()
    );
    let (_, html) = page(&app, &token).await;
    assert!(html.contains("One more step"), "{html}");
    assert_eq!(
        action_link(&html),
        Some(redirect.clone()),
        "the page sends the shopper to the bank: {html}"
    );

    // The browser claims success; Stripe says otherwise: nothing is paid.
    let claim = json!({"acceptance_id": id, "token": token, "status": "succeeded",
                       "redirect_status": "succeeded", "payment_intent": pi});
    let (status, _, early) = post_json(&app, "/ocart/v1/upsells/confirm", None, &claim).await;
    assert_eq!(status, 200, "{early}");
    assert_eq!(early["status"], "requires_action", "{early}");
    let (status, returned) = read(
        app.client
            .get(app.url(&format!(
                "/ocart/v1/upsells/acceptances/{id}/return?payment_intent={pi}&redirect_status=succeeded"
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        returned.to_string().contains("still needs you to confirm"),
        "{returned}"
    );
    assert_eq!(stripe.charges(), 0);
    assert!(events_of(&app, "upsell/charge_succeeded").await.is_empty());
    assert!(woo.children_of(5001).is_empty());

    // The shopper passes 3DS at Stripe; the confirm (a form POST) reads it back.
    assert!(stripe.complete_3ds(&pi));
    let response = browser()
        .post(app.url("/ocart/v1/upsells/confirm"))
        .form(&[("acceptance_id", id.as_str()), ("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(
        location,
        format!("{PUBLIC_URL}/ocart/v1/upsells/page?token={token}")
    );
    let (view, _) = watch(
        &app,
        &id,
        &token,
        "accepted",
        &["requires_action", "succeeded", "accepted"],
    )
    .await;
    let child = only_child(&woo, 5001).await;
    assert_eq!(child["transaction_id"], pi.as_str());
    assert_eq!(view["child_order_id"], child["id"].to_string().as_str());
    assert!(
        stripe
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == format!("/v1/payment_intents/{pi}")),
        "read back from Stripe"
    );
    app.settle().await;
    assert_eq!(stripe.charges(), 1);
    assert_eq!(stripe.creates(), 1, "one create; the rest were read-backs");
    assert_eq!(events_of(&app, "upsell/charge_succeeded").await.len(), 1);
    assert_eq!(woo.children_of(5001).len(), 1);
}

#[tokio::test]
async fn postgres_stripe_3ds_through_the_hosted_page() {
    stripe_3ds_through_the_page_on(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_stripe_3ds_through_the_hosted_page() {
    stripe_3ds_through_the_page_on(Kind::Sqlite).await;
}

/// The hidden field `name` of the form in `html`.
fn hidden(html: &str, name: &str) -> String {
    attribute(html, &format!("name=\"{name}\""), "value")
        .unwrap_or_else(|| panic!("no hidden {name} in {html}"))
}

async fn sandbox_3ds_on_the_default_config_on(kind: Kind) {
    // The embedded default: no gateway account, no store connector.
    let app = spawn_app(kind).await;
    let upsell = offer(&app, "upsell", "Mug warmer", 2999, 1999).await;
    let (status, body) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": FUNNEL, "name": "Main", "status": "active", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": upsell,
                 "branches": {"default": "thanks"}},
                {"key": "thanks", "type": "thank_you"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    paid_order(&app, "6001", ("sandbox", None, "pm_sandbox_3ds")).await;
    let token = issue_token(&app, "6001", "upsell").await;

    // The shopper accepts with the page's form (no JavaScript): 303 to the page.
    let response = browser()
        .post(app.url(&format!("/ocart/v1/upsells/{upsell}/accept")))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let id = acceptance_id("6001", FUNNEL, "upsell");
    let (view, _) = watch(
        &app,
        &id,
        &token,
        "requires_action",
        &["charging", "processing", "requires_action"],
    )
    .await;
    let charge_ref = view["charge_ref"].as_str().unwrap().to_owned();

    // The page links the sandbox's own 3DS page.
    let (_, html) = page(&app, &token).await;
    let link = action_link(&html).unwrap_or_else(|| panic!("a link to the 3DS page: {html}"));
    let path = link
        .strip_prefix(PUBLIC_URL)
        .unwrap_or_else(|| panic!("{link}"))
        .to_owned();
    assert!(
        path.starts_with(&format!("/ocart/v1/sandbox/3ds/{charge_ref}?token=")),
        "{path}"
    );

    // Confirming before the verification pays nothing.
    let (status, _, early) = post_json(
        &app,
        "/ocart/v1/upsells/confirm",
        None,
        &json!({"acceptance_id": id, "token": token}),
    )
    .await;
    assert_eq!(status, 200, "{early}");
    assert_eq!(early["status"], "requires_action");
    assert_eq!(app.core.gateways.sandbox().unwrap().succeeded_charges(), 0);

    // The sandbox's page: a button that verifies, then a form back to the confirm route.
    let response = browser().get(app.url(&path)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let form = response.text().await.unwrap();
    let action = attribute(&form, "<form", "action").unwrap();
    assert_eq!(action, format!("/ocart/v1/sandbox/3ds/{charge_ref}"));
    let response = browser()
        .post(app.url(&action))
        .form(&[("token", hidden(&form, "token").as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let back = response.text().await.unwrap();
    assert_eq!(
        attribute(&back, "<form", "action").as_deref(),
        Some("/ocart/v1/upsells/confirm")
    );
    assert_eq!(hidden(&back, "acceptance_id"), id);
    let response = browser()
        .post(app.url("/ocart/v1/upsells/confirm"))
        .form(&[
            ("acceptance_id", hidden(&back, "acceptance_id").as_str()),
            ("token", hidden(&back, "token").as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let (view, _) = watch(
        &app,
        &id,
        &token,
        "accepted",
        &["requires_action", "succeeded", "accepted"],
    )
    .await;
    assert_eq!(view["child_order_id"], format!("ocart-{id}").as_str());
    let (_, html) = page(&app, &token).await;
    assert!(html.contains("Added to your order"), "{html}");
    app.settle().await;
    assert_eq!(app.core.gateways.sandbox().unwrap().succeeded_charges(), 1);
    assert_eq!(events_of(&app, "upsell/accepted").await.len(), 1);
}

#[tokio::test]
async fn postgres_sandbox_3ds_on_the_embedded_default_config() {
    sandbox_3ds_on_the_default_config_on(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_sandbox_3ds_on_the_embedded_default_config() {
    sandbox_3ds_on_the_default_config_on(Kind::Sqlite).await;
}

// ---- 4. Refusals reach no gateway -----------------------------------------------------------

/// Asserts a refusal: `status`, the problem type, `application/problem+json`.
fn refused(answer: &(u16, String, Value), status: u16, slug: &str, label: &str) {
    let (code, content_type, body) = answer;
    assert_eq!(*code, status, "{label}: {body}");
    assert_eq!(problem_type(body), slug, "{label}: {body}");
    assert_eq!(
        content_type, "application/problem+json",
        "{label}: a problem document"
    );
    assert_eq!(body["status"], status, "{label}");
}

async fn refusals_reach_no_gateway_on(kind: Kind) {
    let stripe = FakeStripe::start().await;
    let paypal = FakePayPal::start().await;
    let woo = FakeWoo::start().await;
    let Shop {
        app,
        upsell,
        downsell,
    } = shop(kind, |c| {
        stripe.configure(c);
        paypal.configure(c);
        woo.configure(c);
    })
    .await;
    let accept_path = format!("/ocart/v1/upsells/{upsell}/accept");
    let with = |token: &str| json!({ "token": token });
    paid_order(&app, "7001", ("stripe", Some("cus_ocart"), PM_VISA)).await;
    paid_order(&app, "7002", ("paypal", None, VAULT_OK)).await;

    // Tampered: the claims changed under the signature.
    let token = issue_token(&app, "7001", "upsell").await;
    let (claims, signature) = token.split_once('.').unwrap();
    let mut bytes = claims.as_bytes().to_vec();
    bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{}.{signature}", String::from_utf8(bytes).unwrap());
    let answer = post_json(&app, &accept_path, Some("r-1"), &with(&tampered)).await;
    refused(&answer, 401, "upsell-token-invalid", "tampered");

    // Foreign: the upsell's token on the downsell; order 7001's token confirming 7002's step.
    let answer = post_json(
        &app,
        &format!("/ocart/v1/upsells/{downsell}/accept"),
        Some("r-2"),
        &with(&token),
    )
    .await;
    refused(&answer, 403, "upsell-token-foreign", "another offer");
    let other = acceptance_id("7002", FUNNEL, "upsell");
    let answer = post_json(
        &app,
        "/ocart/v1/upsells/confirm",
        None,
        &json!({"acceptance_id": other, "token": token}),
    )
    .await;
    refused(&answer, 403, "upsell-token-foreign", "another order");

    // Burned: the step was declined; the token accepts nothing any more.
    let burned = issue_token(&app, "7002", "upsell").await;
    let (status, _, body) = post_json(
        &app,
        &format!("/ocart/v1/upsells/{upsell}/decline"),
        Some("r-3"),
        &with(&burned),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer = post_json(&app, &accept_path, Some("r-4"), &with(&burned)).await;
    refused(&answer, 409, "upsell-step-decided", "burned");
    assert_eq!(answer.2["acceptance_status"], "declined_by_shopper");

    // Unpaid parent: paid when the token was issued, cancelled since.
    paid_order(&app, "7003", ("paypal", None, VAULT_OK)).await;
    let unpaid = issue_token(&app, "7003", "upsell").await;
    store_order(&app, "7003", "cancelled", 10, ("paypal", None, VAULT_OK)).await;
    let answer = post_json(&app, &accept_path, Some("r-5"), &with(&unpaid)).await;
    refused(&answer, 409, "upsell-parent-unpaid", "unpaid parent");

    // Expired.
    app.clock.advance(chrono::Duration::minutes(31));
    let answer = post_json(&app, &accept_path, Some("r-6"), &with(&token)).await;
    refused(&answer, 410, "upsell-token-expired", "expired");

    // Ineligible: the offer archived after the token was issued.
    paid_order(&app, "7004", ("stripe", Some("cus_ocart"), PM_VISA)).await;
    let fresh = issue_token(&app, "7004", "upsell").await;
    let response = app
        .client
        .delete(app.url(&format!("/ocart/v1/upsells/{upsell}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let answer = post_json(&app, &accept_path, Some("r-7"), &with(&fresh)).await;
    refused(&answer, 422, "upsell-offer-ineligible", "ineligible");

    // Once everything settled: no charge asked, no gateway called, no store order.
    app.settle().await;
    assert!(events_of(&app, "upsell/before_charge").await.is_empty());
    assert_eq!(stripe.creates(), 0, "no request reached Stripe");
    assert_eq!(stripe.charges(), 0);
    assert_eq!((paypal.orders(), paypal.captures()), (0, 0), "nor PayPal");
    assert_eq!(woo.orders_created(), 0);
}

#[tokio::test]
async fn postgres_refusals_are_problems_and_reach_no_gateway() {
    refusals_reach_no_gateway_on(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_refusals_are_problems_and_reach_no_gateway() {
    refusals_reach_no_gateway_on(Kind::Sqlite).await;
}
