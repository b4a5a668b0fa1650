//! Restore links and order signals: `GET /r/{token}` hands the cart to the checkout (whole,
//! partial, or not at all, with the outcome recorded), and orders arriving through the order
//! API or signed WooCommerce webhooks convert the right cart, credit or stop its run, and are
//! safe to replay.

use chrono::Duration;
use ocart_domain::Clock;
use ocart_tests::{
    capture_body, outbox_emails, session, wc_order, wp_json_encode, FakeWoo, Kind, TestApp,
    WOO_WEBHOOK_SECRET,
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

/// A store whose product ids are strings: capture keeps every id as given (string or number),
/// the cart reads back the same, and the restore link carries the strings with `,`, `:` and
/// `%` percent-encoded, so the item list still splits. The WooCommerce connector is asked only
/// about numeric ids.
#[tokio::test]
async fn string_product_ids_are_kept_as_given_through_capture_and_restore() {
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    let m = Manual::start(Kind::Sqlite, |c| woo.configure(c)).await;
    let app = &m.app;
    let mut body = capture_body(&session(), "str@example.com", 1);
    body["items"].as_array_mut().unwrap().push(json!({
        "product_id": "tea:green,50%", "variation_id": "杯-L", "name": "Tea", "quantity": 3,
        "unit_price": 500
    }));
    body["items"].as_array_mut().unwrap().push(
        json!({"product_id": "42", "name": "Digits as text", "quantity": 1, "unit_price": 100}),
    );
    body["totals"] = json!({"subtotal": 2850, "total": 2850});
    let (status, reply) = app.capture(&body).await;
    assert_eq!(status, 202, "{reply}");
    let cart_id = reply["cart_id"].as_str().unwrap().to_owned();
    m.project().await;
    let (status, cart) = app.admin_get(&format!("/ocart/v1/carts/{cart_id}")).await;
    assert_eq!(status, 200, "{cart}");
    assert_eq!(
        cart["items"][0]["product_id"],
        json!(42),
        "a number stays a number"
    );
    assert_eq!(cart["items"][1]["product_id"], json!("tea:green,50%"));
    assert_eq!(cart["items"][1]["variation_id"], json!("杯-L"));
    assert_eq!(
        cart["items"][2]["product_id"],
        json!("42"),
        "a string stays a string"
    );
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
        query.contains(&(
            "ocart_items".into(),
            "42x1,tea%3Agreen%2C50%25:杯-Lx3,42x1".into()
        )),
        "{query:?}"
    );
    let clicks = events_of(app, "recovery/restore_clicked").await;
    assert_eq!(clicks[0]["outcome"]["result"], "restored");
    // Ids that are neither: refused by name, nothing written.
    for bad in [
        json!(-1),
        json!(4.5),
        json!(""),
        json!("x".repeat(101)),
        json!(null),
    ] {
        let mut body = capture_body(&session(), "bad.id@example.com", 1);
        body["items"][0]["product_id"] = bad.clone();
        let (status, problem) = app.capture(&body).await;
        assert_eq!(status, 422, "{bad}: {problem}");
        assert_eq!(
            problem["errors"][0]["field"], "items[0].product_id",
            "{bad}: {problem}"
        );
    }
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
    // A store with three price decimals in EUR: the total is rounded to the cent, half away
    // from zero, as WooCommerce rounds.
    let mut three = wc_order(1002, "processing", "stripe", "25.005", "ann@example.com");
    three["currency"] = json!("EUR");
    let (status, reply) = app
        .wc_webhook("order.created", &three, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    m.project().await;
    let (_, order) = app.admin_get("/ocart/v1/orders/1002").await;
    assert_eq!(order["total_minor"], 2501, "{order}");
    // What is no amount at all is still refused, naming the field.
    let mut bad = wc_order(1003, "processing", "stripe", "25,00", "ann@example.com");
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
    // A total that would overflow the sums is refused as any other bad amount.
    for total in [json!(i64::MAX), json!(100_000_000_001i64)] {
        let (status, problem) = app
            .post(
                "/ocart/v1/orders",
                Some(&app.admin),
                &json!({"order_id": "big", "status": "processing", "currency": "EUR", "total": total}),
            )
            .await;
        assert_eq!(status, 422, "{problem}");
        assert_eq!(problem["errors"][0]["field"], "total", "{problem}");
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

/// A WooCommerce time `minutes` from now (by the test clock), as its webhooks write them.
fn wc_time(app: &TestApp, minutes: i64) -> String {
    (app.clock.now() + Duration::minutes(minutes))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// A WooCommerce order of `lines` lines, in the full shape of WooCommerce's REST API v3 that
/// its order webhooks deliver (each line with its taxes, meta data and image).
fn full_wc_order(app: &TestApp, id: u64, lines: usize) -> Value {
    let now = wc_time(app, 0);
    let line_items: Vec<Value> = (0..lines)
        .map(|i| {
            json!({
                "id": 1000 + i, "name": format!("Tasse émaillée – bleu nuit n° {i}"),
                "product_id": 42, "variation_id": 4200 + i, "quantity": 1, "tax_class": "",
                "subtotal": "10.00", "subtotal_tax": "2.00", "total": "10.00", "total_tax": "2.00",
                "taxes": [{"id": 1, "total": "2", "subtotal": "2"}],
                "meta_data": [
                    {"id": 5000 + i, "key": "pa_couleur", "value": "bleu-nuit",
                     "display_key": "Couleur", "display_value": "Bleu nuit"},
                    {"id": 9000 + i, "key": "_reduced_stock", "value": "1",
                     "display_key": "_reduced_stock", "display_value": "1"}
                ],
                "sku": format!("TASSE-{i:04}"), "price": 10,
                "image": {"id": "77", "src": "https://shop.example/wp-content/uploads/2026/01/tasse-bleu-nuit-300x300.jpg"},
                "parent_name": "Tasse émaillée"
            })
        })
        .collect();
    let subtotal = lines as i64 * 10;
    let tax = lines as i64 * 2;
    let mut order = json!({
        "id": id, "parent_id": 0, "status": "processing", "currency": "EUR", "version": "9.5.1",
        "prices_include_tax": false, "date_created": now, "date_modified": now,
        "discount_total": "0.00", "discount_tax": "0.00", "shipping_total": "0.00",
        "shipping_tax": "0.00", "cart_tax": format!("{tax}.00"), "total": format!("{}.00", subtotal + tax),
        "total_tax": format!("{tax}.00"), "customer_id": 0, "order_key": format!("wc_order_{id}"),
        "billing": {"first_name": "Ann", "last_name": "Example", "company": "", "address_1": "1 Rue de la Paix",
            "address_2": "", "city": "Paris", "state": "", "postcode": "75002", "country": "FR",
            "email": "ann@example.com", "phone": "+33100000000"},
        "shipping": {"first_name": "Ann", "last_name": "Example", "company": "", "address_1": "1 Rue de la Paix",
            "address_2": "", "city": "Paris", "state": "", "postcode": "75002", "country": "FR", "phone": ""},
    });
    let rest = json!({
        "payment_method": "stripe", "payment_method_title": "Carte bancaire", "transaction_id": "pi_3Q",
        "customer_ip_address": "203.0.113.9", "customer_user_agent": "Mozilla/5.0", "created_via": "checkout",
        "customer_note": "", "date_completed": null, "date_paid": now, "cart_hash": "0f3c",
        "number": id.to_string(), "meta_data": [{"id": 1, "key": "_ocart_session", "value": "none"}],
        "line_items": line_items, "tax_lines": [{"id": 2, "rate_code": "FR-TVA-1", "rate_id": 1,
            "label": "TVA", "compound": false, "tax_total": format!("{tax}.00"), "shipping_tax_total": "0.00",
            "rate_percent": 20, "meta_data": []}],
        "shipping_lines": [], "fee_lines": [], "coupon_lines": [], "refunds": [],
        "payment_url": format!("https://shop.example/checkout/order-pay/{id}/?pay_for_order=true&key=wc_order_{id}"),
        "is_editable": false, "needs_payment": false, "needs_processing": true,
        "date_created_gmt": now, "date_modified_gmt": now, "date_completed_gmt": null, "date_paid_gmt": now,
        "currency_symbol": "€",
        "_links": {"self": [{"href": format!("https://shop.example/wp-json/wc/v3/orders/{id}")}],
            "collection": [{"href": "https://shop.example/wp-json/wc/v3/orders"}]}
    });
    for (key, value) in rest.as_object().unwrap() {
        order[key] = value.clone();
    }
    order
}

/// WooCommerce sends the whole order: one of a thousand lines (about a megabyte) is recorded,
/// signed over the bytes WooCommerce writes, not refused with 413. Bodies over a limit, on the
/// order routes and elsewhere, get a problem document naming the limit.
#[tokio::test]
async fn a_woocommerce_order_of_a_thousand_lines_is_accepted_and_oversized_bodies_get_problems() {
    let woo = FakeWoo::start().await;
    let m = Manual::start(Kind::Sqlite, |c| woo.configure(c)).await;
    let app = &m.app;
    let raw = wp_json_encode(&full_wc_order(app, 7001, 1000));
    assert!(raw.len() > 512 * 1024, "{} bytes", raw.len());
    assert!(String::from_utf8_lossy(&raw).contains(r"\/wp-json\/wc\/v3"));
    let (status, reply) = app
        .wc_webhook_raw("order.created", raw, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["paid"], true);
    assert_eq!(reply["changed"], true);
    m.project().await;
    let (_, shown) = app.admin_get("/ocart/v1/orders/7001").await;
    assert_eq!(shown["total_minor"], 1_200_000, "{shown}");

    // The order API takes the same size (here a small order padded past 64 KiB).
    let padded = format!(
        r#"{{"order_id": "A-7", "status": "processing", "currency": "EUR", "total": 100{}}}"#,
        " ".repeat(200 * 1024)
    );
    let resp = app
        .client
        .post(app.url("/ocart/v1/orders"))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);

    // Past the order limit (4 MiB): a problem document, not plain text.
    let huge = wp_json_encode(&full_wc_order(app, 7002, 8000));
    assert!(huge.len() > 4 * 1024 * 1024);
    let resp = app
        .client
        .post(app.url("/ocart/v1/webhooks/woocommerce"))
        .header("content-type", "application/json")
        .header("x-wc-webhook-topic", "order.created")
        .header(
            "x-wc-webhook-signature",
            ocart_tests::wc_signature(WOO_WEBHOOK_SECRET, &huge),
        )
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(
        problem["type"],
        "https://ocart.dev/problems/payload-too-large"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("4194304"),
        "{problem}"
    );

    // Every other route keeps 64 KiB, and says so the same way.
    let (status, created) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({"order_id": "A-8", "status": "processing", "currency": "EUR", "total": 100}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let cart = capture(app, "bo@example.com").await;
    let resp = app
        .client
        .post(app.url(&format!("/ocart/v1/carts/{cart}/convert")))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(format!(r#"{{"order_id": "1"{}}}"#, " ".repeat(70 * 1024)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let problem: Value = resp.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("65536"),
        "{problem}"
    );
    assert!(events_of(app, "cart/converted").await.is_empty());
}

/// Deliveries arrive out of order: a late `pending` delivery older (by `date_modified_gmt`)
/// than the paid state OCart has is ignored, never turning the order back to unpaid; a newer
/// one applies. The order API orders by `modified_at` the same way.
#[tokio::test]
async fn a_stale_delivery_never_turns_a_paid_order_back_to_unpaid() {
    let woo = FakeWoo::start().await;
    let m = Manual::start(Kind::Sqlite, |c| woo.configure(c)).await;
    let app = &m.app;
    let mut paid = order_now(app, 3001, "processing", "stripe", "25.00", "di@example.com");
    paid["date_modified_gmt"] = json!(wc_time(app, 10));
    let mut pending = paid.clone();
    pending["status"] = json!("pending");
    pending["date_modified_gmt"] = json!(wc_time(app, 5));
    let (status, reply) = app
        .wc_webhook("order.updated", &paid, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["paid"], true);
    let (status, reply) = app
        .wc_webhook("order.updated", &pending, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["stale"], true);
    assert_eq!(reply["changed"], false);
    assert_eq!(reply["paid"], true);
    m.project().await;
    let (_, shown) = app.admin_get("/ocart/v1/orders/3001").await;
    assert_eq!(shown["status"], "processing");
    assert_eq!(shown["paid"], true);
    assert_eq!(events_of(app, "order/status_changed").await.len(), 0);

    // A newer delivery applies.
    let mut cancelled = paid.clone();
    cancelled["status"] = json!("cancelled");
    cancelled["date_modified_gmt"] = json!(wc_time(app, 20));
    let (_, reply) = app
        .wc_webhook("order.updated", &cancelled, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(reply["changed"], true, "{reply}");
    assert_eq!(reply["paid"], false);

    // The order API: `modified_at` orders its signals.
    let at = |minutes: i64| (app.clock.now() + Duration::minutes(minutes)).to_rfc3339();
    let signal = |status: &str, modified: String| {
        json!({"order_id": "B-1", "status": status, "payment_method": "stripe", "currency": "EUR",
               "total": 1250, "modified_at": modified})
    };
    let (status, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &signal("completed", at(10)),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let (_, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &signal("pending", at(2)),
        )
        .await;
    assert_eq!(reply["stale"], true, "{reply}");
    let (_, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &signal("pending", at(10)),
        )
        .await;
    assert_eq!(
        reply["paid"], true,
        "equal times keep the paid state: {reply}"
    );
    m.project().await;
    let (_, shown) = app.admin_get("/ocart/v1/orders/B-1").await;
    assert_eq!(shown["status"], "completed");
    let (status, problem) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &signal("completed", at(3 * 24 * 60)),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "modified_at");
}

/// An order placed after abandonment but before any message went out converts the cart, but
/// the run did not recover it: it stops (`order_placed`) with no revenue, and the analytics
/// count no recovery. The order named the cart by its id, and says so.
#[tokio::test]
async fn an_order_before_any_message_credits_no_run() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    let cart = capture(app, "el@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    assert_eq!(m.only_run(&cart).await["status"], "pending");
    app.clock.advance(Duration::minutes(5));
    let (status, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({"order_id": "C-1", "status": "processing", "payment_method": "stripe",
                    "currency": "EUR", "total": 2500, "cart_id": cart}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attribution"]["cart_id"], cart.as_str());
    assert_eq!(reply["attribution"]["matched_by"], "cart_id");
    m.settle().await;
    let run = m.only_run(&cart).await;
    assert_eq!(run["status"], "stopped", "{run}");
    assert_eq!(run["stop_reason"], "order_placed");
    assert_eq!(run["revenue_recovered"], 0);
    assert!(events_of(app, "recovery/converted").await.is_empty());
    // (The window ends now; the order was placed at the test clock's now.)
    app.clock.advance(Duration::minutes(1));
    let (_, report) = app.admin_get("/ocart/v1/recovery/analytics?days=30").await;
    assert_eq!(report["completed_before_abandonment"], 0, "{report}");
    assert_eq!(report["recovered_carts"], 0, "{report}");
    assert_eq!(report["recovered_revenue"], json!({}));
    app.clock.advance(Duration::days(4));
    m.dispatch().await;
    assert!(outbox_emails(app).is_empty());
}

/// A recovered order later cancelled (or refunded, or failed) gives its revenue back: the run
/// records `recovery/conversion_reversed`, and the analytics and the dashboard show the lower
/// figure. A repeated cancellation changes nothing more.
async fn cancelled_recovery(kind: Kind) {
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    let m = Manual::start(kind, |c| woo.configure(c)).await;
    let app = &m.app;
    let cart = first_email(&m, "fay@example.com").await;
    let token = restore_path(app, 0).strip_prefix("/r/").unwrap().to_owned();
    app.clock.advance(Duration::minutes(10));
    let mut order = order_now(
        app,
        4001,
        "processing",
        "stripe",
        "25.00",
        "fay@example.com",
    );
    order["date_modified_gmt"] = json!(wc_time(app, 0));
    order["meta_data"] = json!([
        {"id": 1, "key": "_ocart_cart_id", "value": cart},
        {"id": 2, "key": "_ocart_restore", "value": token}
    ]);
    let (status, reply) = app
        .wc_webhook("order.created", &order, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attribution"]["matched_by"], "restore_token");
    m.settle().await;
    assert_eq!(m.only_run(&cart).await["revenue_recovered"], 2500);
    // (The window ends now; the order was placed at the test clock's now.)
    app.clock.advance(Duration::minutes(1));
    let (_, report) = app.admin_get("/ocart/v1/recovery/analytics?days=30").await;
    assert_eq!(report["recovered_carts"], 1, "{report}");
    let (_, dashboard) = app.admin_get("/ocart/v1/reports/dashboard?days=30").await;
    assert_eq!(
        dashboard["recovery"]["recovered_revenue"],
        json!({"EUR": 2500}),
        "{dashboard}"
    );
    assert_eq!(
        report["recovered_revenue"],
        json!({"EUR": 2500}),
        "{report}"
    );

    let mut cancelled = order.clone();
    cancelled["status"] = json!("cancelled");
    cancelled["date_modified_gmt"] = json!(wc_time(app, 60));
    for _ in 0..2 {
        let (status, reply) = app
            .wc_webhook("order.updated", &cancelled, Some(WOO_WEBHOOK_SECRET))
            .await;
        assert_eq!(status, 200, "{reply}");
        m.settle().await;
    }
    let run = m.only_run(&cart).await;
    assert_eq!(run["status"], "stopped", "{run}");
    assert_eq!(run["stop_reason"], "order_reversed");
    assert_eq!(run["revenue_recovered"], 0);
    let reversed = events_of(app, "recovery/conversion_reversed").await;
    assert_eq!(reversed.len(), 1);
    assert_eq!(reversed[0]["order_id"], "4001");
    assert_eq!(reversed[0]["status"], "cancelled");
    let (_, report) = app.admin_get("/ocart/v1/recovery/analytics?days=30").await;
    assert_eq!(report["recovered_revenue"], json!({}), "{report}");
    assert_eq!(report["recovered_carts"], 0);
    let (_, dashboard) = app.admin_get("/ocart/v1/reports/dashboard?days=30").await;
    assert_eq!(
        dashboard["recovery"]["recovered_revenue"],
        json!({}),
        "{dashboard}"
    );
    assert_eq!(dashboard["orders"]["orders"], 0);
}

#[tokio::test]
async fn postgres_a_cancelled_recovered_order_takes_its_revenue_back() {
    cancelled_recovery(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_cancelled_recovered_order_takes_its_revenue_back() {
    cancelled_recovery(Kind::Sqlite).await;
}

/// "You have already ordered" only while the order stands: once the store cancels it, the
/// restore link rebuilds the cart again.
#[tokio::test]
async fn a_cancelled_order_does_not_block_the_restore() {
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    let m = Manual::start(Kind::Sqlite, |c| woo.configure(c)).await;
    let app = &m.app;
    let cart = first_email(&m, "gil@example.com").await;
    let path = restore_path(app, 0);
    let mut order = order_now(
        app,
        6001,
        "processing",
        "stripe",
        "25.00",
        "gil@example.com",
    );
    order["date_modified_gmt"] = json!(wc_time(app, 0));
    order["meta_data"] = json!([{"id": 1, "key": "_ocart_cart_id", "value": cart}]);
    let (status, reply) = app
        .wc_webhook("order.created", &order, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    m.settle().await;
    let client = no_redirects();
    let resp = client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("You have already ordered"));

    order["status"] = json!("cancelled");
    order["date_modified_gmt"] = json!(wc_time(app, 30));
    let (status, reply) = app
        .wc_webhook("order.updated", &order, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    m.settle().await;
    let resp = client.get(app.url(&path)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let query = query_of(resp.headers()["location"].to_str().unwrap());
    assert!(
        query.contains(&("ocart_cart".into(), cart.clone())),
        "{query:?}"
    );
    let clicks = events_of(app, "recovery/restore_clicked").await;
    assert_eq!(clicks[0]["outcome"]["reason"], "already_ordered");
    assert_eq!(clicks[1]["outcome"]["result"], "restored");
}
