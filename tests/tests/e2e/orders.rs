//! Restore links and order signals: `GET /r/{token}` hands the cart to the checkout (whole,
//! partial, or not at all, with the outcome recorded), and orders arriving through the order
//! API or signed WooCommerce webhooks convert the right cart, credit or stop its run, and are
//! safe to replay.

use chrono::Duration;
use ocart_domain::Clock;
use ocart_tests::{
    capture_body, outbox_emails, session, wc_order, FakeWoo, Kind, TestApp, WOO_WEBHOOK_SECRET,
};
use serde_json::{json, Value};

use crate::recovery::{capture, events_of, Manual};

/// A WooCommerce order placed now (by the test clock).
fn order_now(
    app: &TestApp,
    id: u64,
    status: &str,
    gateway: &str,
    total: &str,
    email: &str,
) -> Value {
    let mut order = wc_order(id, status, gateway, total, email);
    let now = app.clock.now().format("%Y-%m-%dT%H:%M:%S").to_string();
    order["date_created"] = json!(now);
    order["date_created_gmt"] = json!(now);
    order
}

/// A client that does not follow redirects.
pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The body of a quoted-printable MIME part, decoded (soft line breaks joined, `=XX` bytes).
pub(crate) fn unquote(qp: &str) -> String {
    let joined = qp.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The restore link (path) of the `n`th email in the outbox.
fn restore_path(app: &TestApp, n: usize) -> String {
    link_path(&outbox_emails(app)[n].1, "r").expect("a restore link")
}

/// The path of the first `https://ocart.shop.test/{kind}/…` link in an email (r: restore,
/// u: unsubscribe, o: open pixel), decoded from quoted-printable.
pub(crate) fn link_path(eml: &str, kind: &str) -> Option<String> {
    let body = unquote(eml);
    let start = body.find(&format!("https://ocart.shop.test/{kind}/"))?;
    let link: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "/:.-_".contains(*c))
        .collect();
    link.strip_prefix("https://ocart.shop.test")
        .map(str::to_owned)
}

/// The recovery coupon code an email offers, if any.
pub(crate) fn coupon_in(eml: &str) -> Option<String> {
    let text = unquote(eml);
    let start = text.find("OCART-")?;
    Some(
        text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect(),
    )
}

/// A cart captured, abandoned and sent its first email; answers the cart id.
async fn first_email(m: &Manual, email: &str) -> String {
    let app = &m.app;
    let cart = capture(app, email).await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    cart
}

fn query_of(location: &str) -> Vec<(String, String)> {
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn restore_with_store(kind: Kind) {
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    let m = Manual::start(kind, |c| woo.configure(c)).await;
    let app = &m.app;
    let cart = first_email(&m, "ann@example.com").await;
    let path = restore_path(app, 0);
    let client = no_redirects();

    // A click rebuilds the cart at the store's checkout, in the URL: any device, no cookie.
    let resp = client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("http://127.0.0.1:{}/checkout/?", woo.port)),
        "{location}"
    );
    let query = query_of(&location);
    let token = path.strip_prefix("/r/").unwrap();
    assert!(query.contains(&("ocart_restore".into(), token.into())));
    assert!(query.contains(&("ocart_cart".into(), cart.clone())));
    assert!(query.contains(&("ocart_items".into(), "42x2".into())));
    assert!(woo
        .state
        .requests
        .lock()
        .unwrap()
        .contains(&"GET /wp-json/wc/v3/products?include=42".to_owned()));
    let clicks = events_of(app, "recovery/restore_clicked").await;
    assert_eq!(clicks.len(), 1);
    assert_eq!(clicks[0]["outcome"]["result"], "restored");

    // The product sells out: the next click still restores, but records a failure.
    woo.set_product(42, true, "outofstock");
    let resp = client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("no longer available"));
    let clicks = events_of(app, "recovery/restore_clicked").await;
    assert_eq!(clicks[1]["outcome"]["result"], "failed");
    assert_eq!(clicks[1]["outcome"]["reason"], "unavailable");

    // Tampered and unknown tokens: a friendly page, never a stack trace.
    for bad in [
        format!("{path}x"),
        "/r/short".into(),
        format!("/r/{}", "A".repeat(43)),
    ] {
        let resp = client.get(app.url(&bad)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{bad}");
        assert!(resp
            .text()
            .await
            .unwrap()
            .contains("This link is not valid"));
    }

    // After `recovery.restore_link_days` (30) the link has expired, and that is recorded.
    app.clock.advance(Duration::days(31));
    let resp = client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 410);
    assert!(resp.text().await.unwrap().contains("This link has expired"));
    let clicks = events_of(app, "recovery/restore_clicked").await;
    assert_eq!(clicks.len(), 3);
    assert_eq!(clicks[2]["outcome"]["reason"], "expired");
    m.project().await;
}

#[tokio::test]
async fn postgres_a_restore_link_rebuilds_the_cart_at_the_checkout() {
    restore_with_store(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_restore_link_rebuilds_the_cart_at_the_checkout() {
    restore_with_store(Kind::Sqlite).await;
}

/// A cart with an item the store no longer sells restores the rest, recorded as partial.
#[tokio::test]
async fn a_partial_restore_leaves_out_what_the_store_no_longer_sells() {
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    woo.set_product(7, false, "instock");
    let m = Manual::start(Kind::Sqlite, |c| woo.configure(c)).await;
    let app = &m.app;
    let mut body = capture_body(&session(), "pat@example.com", 1);
    body["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({"product_id": 7, "variation_id": 8, "name": "Saucer", "quantity": 3, "unit_price": 500}));
    body["totals"] = json!({"subtotal": 2750, "total": 2750});
    let (status, reply) = app.capture(&body).await;
    assert_eq!(status, 202, "{reply}");
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    let resp = no_redirects()
        .get(app.url(&restore_path(app, 0)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let query = query_of(resp.headers()["location"].to_str().unwrap());
    assert!(
        query.contains(&("ocart_items".into(), "42x1".into())),
        "{query:?}"
    );
    let clicks = events_of(app, "recovery/restore_clicked").await;
    assert_eq!(clicks[0]["outcome"]["result"], "partial");
    assert_eq!(clicks[0]["outcome"]["unavailable"], json!([7]));
}

/// Without a store connector the checkout is `<public_url>/checkout/`, and an erased cart's
/// link fails politely.
#[tokio::test]
async fn an_erased_carts_restore_link_fails_politely() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    first_email(&m, "eve@example.com").await;
    let path = restore_path(app, 0);
    let resp = no_redirects().get(app.url(&path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert!(resp.headers()["location"]
        .to_str()
        .unwrap()
        .starts_with("https://ocart.shop.test/checkout/?ocart_restore="));
    m.project().await;
    let (status, body) = app
        .post(
            "/ocart/v1/privacy/erase",
            Some(&app.admin),
            &json!({"email": "eve@example.com"}),
        )
        .await;
    assert!(status == 200 || status == 202, "{status} {body}");
    m.project().await;
    let resp = no_redirects().get(app.url(&path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 410);
    assert!(resp.text().await.unwrap().contains("no longer available"));
    let clicks = events_of(app, "recovery/restore_clicked").await;
    assert_eq!(clicks[1]["outcome"]["reason"], "cart_erased");
}

async fn webhooks(kind: Kind) {
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    let m = Manual::start(kind, |c| woo.configure(c)).await;
    let app = &m.app;
    let cart = first_email(&m, "ann@example.com").await;
    let path = restore_path(app, 0);
    let token = path.strip_prefix("/r/").unwrap().to_owned();

    // The creation ping is answered 200 so WooCommerce activates the webhook.
    let resp = app
        .client
        .post(app.url("/ocart/v1/webhooks/woocommerce"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("webhook_id=12")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    let mut order = order_now(
        app,
        1001,
        "processing",
        "stripe",
        "25.00",
        "Ann@Example.com",
    );
    order["meta_data"] = json!([{"id": 9, "key": "_ocart_restore", "value": token}]);

    // Unsigned and badly signed deliveries are refused with a problem document.
    let (status, problem) = app.wc_webhook("order.created", &order, None).await;
    assert_eq!(status, 401);
    assert_eq!(problem["type"], "https://ocart.dev/problems/bad-signature");
    assert!(problem["detail"].as_str().unwrap().contains("not signed"));
    let (status, problem) = app
        .wc_webhook("order.created", &order, Some("wrong-secret"))
        .await;
    assert_eq!(status, 401);
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("does not match"));
    m.project().await;
    assert_eq!(m.only_run(&cart).await["status"], "pending");

    // The signed delivery converts the cart, matched by the restore token.
    let (status, reply) = app
        .wc_webhook("order.created", &order, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["paid"], true);
    assert_eq!(reply["changed"], true);
    assert_eq!(reply["attribution"]["cart_id"], cart.as_str());
    assert_eq!(reply["attribution"]["matched_by"], "restore_token");
    assert_eq!(reply["attribution"]["outcome"], "recovered");

    // Replays (WooCommerce retries, a duplicated delivery) change nothing.
    for _ in 0..2 {
        let (status, reply) = app
            .wc_webhook("order.created", &order, Some(WOO_WEBHOOK_SECRET))
            .await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["changed"], false);
    }
    m.settle().await;
    let run = m.only_run(&cart).await;
    assert_eq!(run["status"], "converted");
    assert_eq!(run["revenue_recovered"], 2500);
    assert_eq!(run["order_id"], "1001");
    assert_eq!(events_of(app, "recovery/converted").await.len(), 1);
    assert_eq!(events_of(app, "cart/converted").await.len(), 1);
    assert_eq!(events_of(app, "order/recorded").await.len(), 1);
    let (_, shown) = app.admin_get("/ocart/v1/orders/1001").await;
    assert_eq!(shown["total_minor"], 2500);
    assert_eq!(shown["outcome"], "recovered");
    assert_eq!(shown["source"], "woocommerce");

    // A later status is recorded; the attribution stays.
    let mut completed = order.clone();
    completed["status"] = json!("completed");
    let (_, reply) = app
        .wc_webhook("order.updated", &completed, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(reply["changed"], true);
    assert_eq!(reply["attribution"]["matched_by"], "restore_token");
    m.project().await;
    let (_, shown) = app.admin_get("/ocart/v1/orders/1001").await;
    assert_eq!(shown["status"], "completed");

    // Nothing more is ever sent for this cart.
    app.clock.advance(Duration::days(4));
    m.dispatch().await;
    assert_eq!(outbox_emails(app).len(), 1);

    // Other topics are acknowledged and ignored; a bad order body is a clear 422.
    let (status, reply) = app
        .wc_webhook(
            "product.updated",
            &json!({"id": 42}),
            Some(WOO_WEBHOOK_SECRET),
        )
        .await;
    assert_eq!(status, 200);
    assert!(reply["ignored"]
        .as_str()
        .unwrap()
        .contains("product.updated"));
    let mut bad = wc_order(1002, "processing", "stripe", "25.001", "ann@example.com");
    bad["currency"] = json!("EUR");
    let (status, problem) = app
        .wc_webhook("order.created", &bad, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "total");
}

#[tokio::test]
async fn postgres_a_signed_woocommerce_order_converts_the_run_and_replays_change_nothing() {
    webhooks(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_signed_woocommerce_order_converts_the_run_and_replays_change_nothing() {
    webhooks(Kind::Sqlite).await;
}

/// A bank-transfer order waits on-hold for the money: the buyer has ordered and is not chased.
/// It matches by email (the store sent no session); a card order on-hold would not stop it.
#[tokio::test]
async fn an_on_hold_bank_transfer_order_stops_the_sequence() {
    let woo = FakeWoo::start().await;
    let m = Manual::start(Kind::Sqlite, |c| woo.configure(c)).await;
    let app = &m.app;
    let cart = first_email(&m, "bo@example.com").await;

    let card = order_now(app, 2001, "on-hold", "stripe", "25.00", "bo@example.com");
    let (status, reply) = app
        .wc_webhook("order.created", &card, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["paid"], false);
    assert!(reply["attribution"].is_null());

    let bank = order_now(app, 2002, "on-hold", "bacs", "25.00", "bo@example.com");
    let (status, reply) = app
        .wc_webhook("order.created", &bank, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["paid"], true);
    assert_eq!(reply["attribution"]["cart_id"], cart.as_str());
    assert_eq!(reply["attribution"]["matched_by"], "email");
    m.settle().await;
    assert_eq!(m.only_run(&cart).await["status"], "converted");
    app.clock.advance(Duration::days(4));
    m.dispatch().await;
    assert_eq!(outbox_emails(app).len(), 1);
}

/// An order for a cart that was never abandoned is a sale, not a recovery; an order by the
/// same shopper for another cart stops that cart's run.
#[tokio::test]
async fn an_order_before_abandonment_is_not_a_recovery_and_stops_the_buyers_other_runs() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    let abandoned = first_email(&m, "cy@example.com").await;
    let token = session();
    let (status, _) = app
        .capture(&capture_body(&token, "cy@example.com", 1))
        .await;
    assert_eq!(status, 202);
    m.project().await;
    let (status, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({
                "order_id": "A-1", "status": "processing", "payment_method": "stripe",
                "currency": "EUR", "total": 1250, "email": "cy@example.com",
                "session_token": token
            }),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attribution"]["matched_by"], "session");
    assert_eq!(
        reply["attribution"]["outcome"],
        "completed_before_abandonment"
    );
    m.settle().await;
    let run = m.only_run(&abandoned).await;
    assert_eq!(run["status"], "stopped");
    assert_eq!(run["stop_reason"], "order_placed");
    let (_, list) = app.admin_get("/ocart/v1/orders").await;
    assert_eq!(list["orders"][0]["order_id"], "A-1");
    assert_eq!(list["orders"][0]["outcome"], "completed_before_abandonment");
    app.clock.advance(Duration::days(4));
    m.dispatch().await;
    assert_eq!(outbox_emails(app).len(), 1);
}

/// Bad order signals are refused field by field, and nothing is recorded.
#[tokio::test]
async fn bad_order_signals_get_clear_errors() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    let (status, problem) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({"order_id": "", "status": "pro cessing", "currency": "EUROS", "total": -5, "email": "nope"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    for field in ["order_id", "status", "currency", "total", "email"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    let (status, problem) = app
        .post(
            "/ocart/v1/orders",
            None,
            &json!({"order_id": "1", "status": "processing", "currency": "EUR", "total": 1}),
        )
        .await;
    assert_eq!(status, 401, "{problem}");
    // Webhooks are refused when no secret is configured.
    let (status, problem) = app
        .wc_webhook(
            "order.created",
            &wc_order(1, "processing", "stripe", "1.00", "a@b.co"),
            Some("x"),
        )
        .await;
    assert_eq!(status, 503, "{problem}");
    assert!(events_of(app, "order/recorded").await.is_empty());
    let _: Value = problem;
}
