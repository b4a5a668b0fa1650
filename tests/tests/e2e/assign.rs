//! The surfaces use running A/B tests (issue 12): `funnels/resolve` serves the cart's variant
//! of a checkout test (a layout, a funnel) and records `test/assigned` once per cart (in the
//! log and on NATS), whatever the concurrency; the split follows the weights; a stopped test
//! serves the control and assigns nothing; bump eligibility swaps the bump a test targets; the
//! upsell token is bound to the order's variant offer (page and accept serve and charge it); a
//! recovery step with `ab_test` sends the run's variant template.

use std::collections::BTreeSet;

use chrono::Duration as Minutes;
use ocart_domain::abtest::split;
use ocart_domain::cart::cart_id_for_session;
use ocart_domain::order::{order_id_for, OrderCommand, OrderFacts, PaymentRef};
use ocart_domain::{Clock, Currency};
use ocart_processors::STREAM_NAME;
use ocart_projections::CommandMeta;
use ocart_tests::{
    capture_body, outbox_emails, read, session, spawn_app, spawn_app_with, Kind, NatsServer,
    TestApp,
};
use serde_json::{json, Value};

use crate::recovery::{events_of, header, Manual};

/// Creates a test through `POST /tests` (frequentist, planned far beyond what a test sends, so
/// the conclusion process manager leaves it running) and starts it; answers its id.
pub(crate) async fn start_test(
    app: &TestApp,
    surface: &str,
    target: Option<&str>,
    variants: Value,
) -> String {
    let mut body = json!({
        "name": format!("{surface} test"), "surface": surface, "variants": variants,
        "method": "frequentist", "baseline_rate": 0.05, "mde_relative": 0.05
    });
    if let Some(target) = target {
        body["target"] = json!(target);
    }
    let (status, created) = app.post("/ocart/v1/tests", Some(&app.admin), &body).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("test id").to_owned();
    let (status, started) = app
        .post(
            &format!("/ocart/v1/tests/{id}/start"),
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["status"], "running");
    id
}

async fn resolve(app: &TestApp, session: &str) -> Value {
    let resp = app
        .client
        .get(app.url(&format!(
            "/ocart/v1/funnels/resolve?session_token={session}"
        )))
        .send()
        .await
        .expect("request");
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn create_funnel(app: &TestApp, id: &str, layout: &str, is_default: bool) {
    let (status, body) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": id, "name": format!("Funnel {id}"), "status": "active",
                    "trigger": {"is_default": is_default},
                    "settings": {"layout": layout},
                    "steps": [{"key": "checkout", "type": "checkout", "branches": {"default": "thanks"}},
                              {"key": "thanks", "type": "thank_you"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// The `test/assigned` events of test `test_id` (once the assignments this process is
/// recording are recorded).
async fn assigned(app: &TestApp, test_id: &str) -> Vec<Value> {
    app.core.assigner.recorded().await;
    events_of(app, "test/assigned")
        .await
        .into_iter()
        .filter(|e| e["test_id"] == test_id)
        .collect()
}

/// A session whose cart gets variant `index` of a test with `weights` (the split is the
/// domain's, deterministic).
pub(crate) fn session_for(test_id: &str, weights: &[u32], index: usize) -> String {
    (0..10_000)
        .map(|_| session())
        .find(|s| split(test_id, &cart_id_for_session(s).to_string(), weights) == Some(index))
        .expect("a session for the variant")
}

/// Everything on `ocart.test.assigned` with a new durable pull consumer.
async fn assigned_on_nats(nats_url: &str) -> Vec<Value> {
    ocart_tests::pull_all(nats_url, STREAM_NAME, "ocart.test.assigned", "assign-test").await
}

async fn checkout_test_serves_and_assigns_once(kind: Kind) {
    let nats = NatsServer::start();
    let nats_url = nats.url();
    let app = spawn_app_with(kind, |c| c.nats_url = Some(nats_url.clone())).await;
    create_funnel(&app, "main", "two_step", true).await;
    let shopper = session();
    let (status, _) = app
        .capture(&capture_body(&shopper, "ann@example.com", 1))
        .await;
    assert_eq!(status, 202);
    app.settle().await;
    let untested = resolve(&app, &shopper).await;
    assert_eq!(untested["funnel"]["layout"], "two_step");
    assert!(untested.get("tests").is_none(), "{untested}");
    // The OpenAPI document states the optional `tests` and its items.
    let (status, doc) = app.admin_get("/ocart/v1/openapi").await;
    assert_eq!(status, 200);
    let schemas = &doc["components"]["schemas"];
    let resolved = &schemas["Resolved"];
    assert!(resolved["properties"]["tests"].is_object(), "{resolved}");
    let required: Vec<&str> = resolved["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(!required.contains(&"tests"), "{resolved}");
    assert!(schemas["ResolvedTest"]["properties"]["variant"].is_object());
    let bump = &schemas["EligibleBump"]["properties"];
    assert!(
        bump["test_id"].is_object() && bump["variant"].is_object(),
        "{bump}"
    );

    let weights = [1u32, 3];
    let test_id = start_test(
        &app,
        "checkout",
        None,
        json!([{"key": "control", "weight": 1, "serves": "two_step"},
               {"key": "one", "weight": 3, "serves": "one_step"}]),
    )
    .await;
    // The same cart twice: the same variant, the layout it serves, one assignment.
    let cart = cart_id_for_session(&shopper).to_string();
    let expected = split(&test_id, &cart, &weights).unwrap();
    let (key, layout) = [("control", "two_step"), ("one", "one_step")][expected];
    let first = resolve(&app, &shopper).await;
    let again = resolve(&app, &shopper).await;
    assert_eq!(first, again);
    assert_eq!(
        first["tests"],
        json!([{"test_id": test_id, "variant": key}])
    );
    assert_eq!(first["funnel"]["id"], "main");
    assert_eq!(first["funnel"]["layout"], layout, "{first}");
    let events = assigned(&app, &test_id).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["unit"], cart);
    assert_eq!(events[0]["variant"], key);
    assert_eq!(events[0]["surface"], "checkout");

    // Many carts (sessions before their first capture count too): each gets the domain's
    // split, the shares follow the weights 1:3, and the layout follows the variant.
    let n = 400;
    let mut ones = 0;
    for _ in 0..n {
        let s = session();
        let answer = resolve(&app, &s).await;
        let index = split(&test_id, &cart_id_for_session(&s).to_string(), &weights).unwrap();
        assert_eq!(answer["tests"][0]["variant"], ["control", "one"][index]);
        assert_eq!(answer["funnel"]["layout"], ["two_step", "one_step"][index]);
        ones += index;
    }
    let share = ones as f64 / f64::from(n);
    let se = (0.75f64 * 0.25 / f64::from(n)).sqrt();
    assert!(
        (share - 0.75).abs() < 5.0 * se,
        "share of the 3-weight variant {share}"
    );
    assert_eq!(assigned(&app, &test_id).await.len(), n as usize + 1);

    // Stopped: the control, no test in the answer, nothing assigned (an assigned cart too).
    let (status, stopped) = app
        .post(
            &format!("/ocart/v1/tests/{test_id}/stop"),
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{stopped}");
    for s in [session(), shopper.clone()] {
        let answer = resolve(&app, &s).await;
        assert_eq!(answer["funnel"]["layout"], "two_step", "{answer}");
        assert!(answer.get("tests").is_none(), "{answer}");
    }
    app.settle().await;
    assert_eq!(assigned(&app, &test_id).await.len(), n as usize + 1);

    // Every assignment reached NATS once.
    app.eventually("/ocart/v1/info", |i| {
        i["projections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "nats_relay" && p["lag"] == 0)
    })
    .await;
    let on_nats = assigned_on_nats(&nats_url).await;
    let units: Vec<&str> = on_nats
        .iter()
        .filter(|m| m["payload"]["test_id"] == test_id.as_str())
        .map(|m| m["payload"]["unit"].as_str().unwrap())
        .collect();
    assert_eq!(units.len(), n as usize + 1);
    assert_eq!(units.iter().filter(|u| **u == cart).count(), 1);
    assert_eq!(units.iter().collect::<BTreeSet<_>>().len(), units.len());
}

#[tokio::test]
async fn postgres_a_checkout_test_serves_the_variant_layout_and_assigns_each_cart_once() {
    checkout_test_serves_and_assigns_once(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_checkout_test_serves_the_variant_layout_and_assigns_each_cart_once() {
    checkout_test_serves_and_assigns_once(Kind::Sqlite).await;
}

async fn funnel_variants_and_concurrent_first_resolves(kind: Kind) {
    let app = spawn_app(kind).await;
    create_funnel(&app, "main", "two_step", true).await;
    create_funnel(&app, "summer", "three_step", false).await;
    let weights = [1u32, 1];
    let test_id = start_test(
        &app,
        "checkout",
        Some("main"),
        json!([{"key": "control", "weight": 1, "serves": "main"},
               {"key": "summer", "weight": 1, "serves": "summer"}]),
    )
    .await;
    let to_summer = session_for(&test_id, &weights, 1);
    let answer = resolve(&app, &to_summer).await;
    assert_eq!(answer["funnel"]["id"], "summer", "{answer}");
    assert_eq!(answer["funnel"]["layout"], "three_step");
    assert_eq!(answer["steps"].as_array().unwrap().len(), 2);
    let to_main = session_for(&test_id, &weights, 0);
    assert_eq!(resolve(&app, &to_main).await["funnel"]["id"], "main");

    // Twenty first resolves of one cart at once: one variant, one assignment.
    let shopper = session();
    let answers = futures::future::join_all((0..20).map(|_| resolve(&app, &shopper))).await;
    let variants: BTreeSet<String> = answers
        .iter()
        .map(|a| a["tests"][0]["variant"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(variants.len(), 1, "{variants:?}");
    let cart = cart_id_for_session(&shopper).to_string();
    let events = assigned(&app, &test_id).await;
    assert_eq!(events.iter().filter(|e| e["unit"] == cart).count(), 1);
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn postgres_a_funnel_variant_serves_that_funnel_and_concurrent_resolves_assign_once() {
    funnel_variants_and_concurrent_first_resolves(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_funnel_variant_serves_that_funnel_and_concurrent_resolves_assign_once() {
    funnel_variants_and_concurrent_first_resolves(Kind::Sqlite).await;
}

pub(crate) async fn create_bump(app: &TestApp, name: &str, amount: i64) -> String {
    let (status, body) = app
        .post(
            "/ocart/v1/bumps",
            Some(&app.admin),
            &json!({
                "name": name, "currency": "EUR",
                "product": {"product_id": 900 + amount, "name": name, "price": 900, "quantity": 1},
                "pricing": {"type": "fixed_addon", "amount": amount},
                "targeting": {"all": [{"product_in_cart": 42}]},
                "display": {"headline": format!("Add {name}"), "copy": "One click."}
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("offer id").to_owned()
}

pub(crate) async fn eligible(app: &TestApp, session: &str) -> Vec<Value> {
    let resp = app
        .client
        .get(app.url(&format!("/ocart/v1/bumps/eligible?session_token={session}")))
        .send()
        .await
        .expect("request");
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    body["bumps"].as_array().unwrap().clone()
}

async fn bump_test_swaps_the_offer(kind: Kind) {
    let app = spawn_app(kind).await;
    let control = create_bump(&app, "Gift wrap", 300).await;
    let variant = create_bump(&app, "Gift box", 500).await;
    let weights = [1u32, 1];
    // Before the test, both bumps show.
    let before = session();
    app.capture(&capture_body(&before, "ann@example.com", 1))
        .await;
    app.settle().await;
    let offers: BTreeSet<String> = eligible(&app, &before)
        .await
        .iter()
        .map(|b| b["offer_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(offers, BTreeSet::from([control.clone(), variant.clone()]));

    let test_id = start_test(
        &app,
        "bump",
        Some(&control),
        json!([{"key": "control", "weight": 1, "serves": control},
               {"key": "box", "weight": 1, "serves": variant}]),
    )
    .await;
    let to_box = session_for(&test_id, &weights, 1);
    let to_control = session_for(&test_id, &weights, 0);
    for (i, s) in [&to_box, &to_control].into_iter().enumerate() {
        let (status, _) = app
            .capture(&capture_body(s, &format!("shopper{i}@example.com"), 1))
            .await;
        assert_eq!(status, 202);
    }
    app.settle().await;
    let boxed = eligible(&app, &to_box).await;
    assert_eq!(boxed.len(), 1, "{boxed:?}");
    assert_eq!(boxed[0]["offer_id"], variant.as_str());
    assert_eq!(boxed[0]["price"], 500);
    assert_eq!(boxed[0]["test_id"], test_id.as_str());
    assert_eq!(boxed[0]["variant"], "box");
    let plain = eligible(&app, &to_control).await;
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert_eq!(plain[0]["offer_id"], control.as_str());
    assert_eq!(plain[0]["variant"], "control");
    // Resolve shows the same bump and names the test; accepting the served bump works, the
    // other one does not apply to the cart.
    let resolved = resolve(&app, &to_box).await;
    assert_eq!(resolved["bumps"][0]["offer_id"], variant.as_str());
    assert_eq!(
        resolved["tests"],
        json!([{"test_id": test_id, "variant": "box"}])
    );
    let (status, body) = app
        .post(
            &format!("/ocart/v1/bumps/{variant}/accept"),
            None,
            &json!({"session_token": to_box}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .post(
            &format!("/ocart/v1/bumps/{control}/accept"),
            None,
            &json!({"session_token": to_box}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let events = assigned(&app, &test_id).await;
    assert_eq!(events.len(), 2, "{events:?}");
}

#[tokio::test]
async fn postgres_a_bump_test_swaps_the_bump_for_the_carts_variant() {
    bump_test_swaps_the_offer(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_bump_test_swaps_the_bump_for_the_carts_variant() {
    bump_test_swaps_the_offer(Kind::Sqlite).await;
}

fn meta(app: &TestApp) -> CommandMeta {
    CommandMeta::system("test", None, app.clock.now())
}

/// Records a paid order with a sandbox payment, without a cart (so its unit is `order:{id}`).
async fn record_paid_order(app: &TestApp, order_id: &str) {
    let facts = OrderFacts {
        order_id: order_id.into(),
        status: "processing".into(),
        paid: true,
        payment_method: Some("sandbox".into()),
        currency: Currency::parse("currency", "USD").unwrap(),
        total: 5000,
        email_hash: None,
        placed_at: ocart_tests::start_time(),
        source: "api".into(),
        coupon_codes: Vec::new(),
        modified_at: Some(ocart_tests::start_time()),
        payment: Some(PaymentRef {
            gateway: "sandbox".into(),
            customer: None,
            payment_method: "pm_sandbox_ok".into(),
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
                at: app.clock.now(),
            },
            &meta(app),
        )
        .await
        .expect("order recorded");
}

pub(crate) async fn create_upsell(app: &TestApp, name: &str, amount: i64) -> String {
    let (status, body) = app
        .post(
            "/ocart/v1/upsells",
            Some(&app.admin),
            &json!({
                "name": name, "currency": "USD", "kind": "upsell",
                "product": {"product_id": 77, "name": name, "price": 2999, "quantity": 1},
                "pricing": {"type": "price", "amount": amount},
                "display": {"headline": name, "copy": "Just for you"}
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().expect("offer id").to_owned()
}

async fn upsell_test_binds_the_token(kind: Kind) {
    let app = spawn_app(kind).await;
    let control = create_upsell(&app, "Mug warmer", 1999).await;
    let variant = create_upsell(&app, "Mug warmer deluxe", 2499).await;
    let (status, body) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": "main", "name": "Main", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": control,
                 "branches": {"default": "thanks"}},
                {"key": "thanks", "type": "thank_you"}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let weights = [1u32, 1];
    let test_id = start_test(
        &app,
        "upsell",
        Some(&control),
        json!([{"key": "control", "weight": 1, "serves": control},
               {"key": "deluxe", "weight": 1, "serves": variant}]),
    )
    .await;
    let order_for = |index: usize| {
        (1000..3000)
            .map(|n| n.to_string())
            .find(|o| split(&test_id, &format!("order:{o}"), &weights) == Some(index))
            .expect("an order id for the variant")
    };
    let (deluxe_order, control_order) = (order_for(1), order_for(0));
    for order in [&deluxe_order, &control_order] {
        record_paid_order(&app, order).await;
    }
    let issue = |order: String| {
        let app = &app;
        async move {
            let (status, body) = app
                .post(
                    "/ocart/v1/upsells/issue-token",
                    Some(&app.admin),
                    &json!({"order_id": order, "funnel_id": "main", "step": "upsell"}),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            body
        }
    };
    let deluxe = issue(deluxe_order.clone()).await;
    assert_eq!(deluxe["offer_id"], variant.as_str(), "{deluxe}");
    let plain = issue(control_order.clone()).await;
    assert_eq!(plain["offer_id"], control.as_str(), "{plain}");
    // The same order again: the same variant, still one assignment each.
    assert_eq!(
        issue(deluxe_order.clone()).await["offer_id"],
        variant.as_str()
    );
    let events = assigned(&app, &test_id).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events
        .iter()
        .any(|e| e["unit"] == format!("order:{deluxe_order}") && e["variant"] == "deluxe"));

    // The page shows the variant; accept charges it.
    let token = deluxe["token"].as_str().unwrap();
    let page = app
        .client
        .get(app.url(&format!("/ocart/v1/upsells/page?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Mug warmer deluxe"), "{html}");
    let (status, accepted) = app
        .post(
            &format!("/ocart/v1/upsells/{variant}/accept"),
            None,
            &json!({ "token": token }),
        )
        .await;
    assert!((200..300).contains(&status), "{status} {accepted}");
    let before_charge = events_of(&app, "upsell/before_charge").await;
    assert_eq!(before_charge.len(), 1, "{before_charge:?}");
    assert_eq!(before_charge[0]["offer_id"], variant.as_str());
    assert_eq!(before_charge[0]["amount"], 2499, "{before_charge:?}");
}

#[tokio::test]
async fn postgres_an_upsell_test_binds_the_token_to_the_orders_variant_offer() {
    upsell_test_binds_the_token(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_an_upsell_test_binds_the_token_to_the_orders_variant_offer() {
    upsell_test_binds_the_token(Kind::Sqlite).await;
}

async fn recovery_step_sends_the_variant_template(kind: Kind) {
    // The processors are off: writes answer without waiting for projections that never run.
    let m = Manual::start(kind, |c| c.http.read_your_writes_timeout_ms = 0).await;
    let app = &m.app;
    let resp = app
        .client
        .put(app.url("/ocart/v1/recovery/templates/alt_email"))
        .bearer_auth(&app.admin)
        .json(&json!({"subject": "Another look at your cart",
                      "html": "<p>{{ restore_url }}</p>", "text": "{{ restore_url }}"}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert!((200..300).contains(&status), "{status} {body}");
    let weights = [1u32, 3];
    let test_id = start_test(
        app,
        "recovery_email",
        None,
        json!([{"key": "control", "weight": 1, "serves": "recovery_email_1"},
               {"key": "alt", "weight": 3, "serves": "alt_email"}]),
    )
    .await;
    let resp = app
        .client
        .patch(app.url("/ocart/v1/recovery/sequences/default"))
        .bearer_auth(&app.admin)
        .json(&json!({"steps": [{"channel": "email", "delay_min": 45,
                                 "template": "recovery_email_1", "ab_test": test_id}]}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    m.project().await;
    let mut carts = Vec::new();
    for i in 0..8 {
        carts.push(crate::recovery::capture(app, &format!("shopper{i}@example.com")).await);
    }
    app.clock.advance(Minutes::minutes(31));
    m.settle().await;
    app.clock.advance(Minutes::minutes(45));
    assert_eq!(m.dispatch().await.sent, carts.len());
    let mut alt = 0;
    for cart in &carts {
        let run_id = m.only_run(cart).await["run_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let index = split(&test_id, &run_id, &weights).unwrap();
        alt += index;
        let emails = outbox_emails(app);
        let (_, eml) = emails
            .iter()
            .find(|(key, _)| key.starts_with(&run_id))
            .unwrap_or_else(|| panic!("the email of run {run_id}"));
        let subject = header(eml, "Subject").unwrap_or_default();
        assert_eq!(
            subject == "Another look at your cart",
            index == 1,
            "run {run_id} (variant {index}): {subject}"
        );
    }
    assert!(alt > 0, "no run drew the alternative (1 in 65,536)");
    let events = assigned(app, &test_id).await;
    assert_eq!(events.len(), carts.len());
    assert!(events.iter().all(|e| e["surface"] == "recovery_email"));
}

#[tokio::test]
async fn postgres_a_recovery_step_with_an_ab_test_sends_the_runs_variant_template() {
    recovery_step_sends_the_variant_template(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_recovery_step_with_an_ab_test_sends_the_runs_variant_template() {
    recovery_step_sends_the_variant_template(Kind::Sqlite).await;
}
