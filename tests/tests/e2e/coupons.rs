//! Recovery coupons: only on coupon steps, `OCART-` codes restricted to the captured email and
//! single use; kept in OCart's registry (validation endpoint) or created in WooCommerce;
//! matched on orders; expired ones removed.

use chrono::Duration;
use ocart_tests::{capture_body, outbox_emails, session, FakeWoo, Kind};
use serde_json::{json, Value};

use crate::orders::{coupon_in, unquote};
use crate::recovery::{capture, events_of, Manual};

/// Sends the default sequence's three steps to `email`'s abandoned cart; answers the cart id.
async fn three_steps(m: &Manual, email: &str) -> String {
    let app = &m.app;
    let cart = capture(app, email).await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    for hours in [1, 24, 72] {
        app.clock
            .advance(Duration::hours(if hours == 1 { 1 } else { 48 }));
        m.dispatch().await;
    }
    assert_eq!(outbox_emails(app).len(), 3);
    cart
}

async fn settings(app: &ocart_tests::TestApp, patch: Value) -> (u16, Value) {
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&patch)
        .send()
        .await
        .unwrap();
    ocart_tests::read(resp).await
}

#[tokio::test]
async fn the_third_email_carries_a_single_use_coupon_for_the_captured_email() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    let cart = three_steps(&m, "ann@example.com").await;
    let emails = outbox_emails(app);
    assert_eq!(coupon_in(&emails[0].1), None);
    assert_eq!(coupon_in(&emails[1].1), None);
    let code = coupon_in(&emails[2].1).expect("a coupon in the third email");
    assert_eq!(code.len(), "OCART-".len() + 10, "{code}");
    assert!(unquote(&emails[2].1).contains("valid until"));

    let (_, list) = app.admin_get("/ocart/v1/recovery/coupons").await;
    let coupon = &list["coupons"][0];
    assert_eq!(coupon["code"], code.as_str());
    assert_eq!(coupon["cart_id"], cart.as_str());
    assert_eq!(coupon["kind"], "fixed_cart");
    assert_eq!(coupon["amount"], 1000);
    assert_eq!(coupon["status"], "active");
    let issued =
        chrono::DateTime::parse_from_rfc3339(coupon["issued_at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(coupon["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - issued, Duration::days(7));

    // The registry answers for the captured email only.
    let validate = |code: &str, email: &str| {
        let body = json!({"code": code, "email": email});
        async move {
            app.post("/ocart/v1/coupons/validate", Some(&app.admin), &body)
                .await
        }
    };
    let (status, verdict) = validate(&code.to_lowercase(), "ann@example.com").await;
    assert_eq!(status, 200, "{verdict}");
    assert_eq!(verdict["valid"], true);
    assert_eq!(verdict["amount"], 1000);
    let (_, verdict) = validate(&code, "someone@example.com").await;
    assert_eq!(verdict["reason"], "wrong_email");
    let (_, verdict) = validate("OCART-NOPE", "ann@example.com").await;
    assert_eq!(verdict["reason"], "unknown_code");
    let (status, problem) = validate(&code, "not-an-email").await;
    assert_eq!(status, 422, "{problem}");

    // An order that names only the coupon is matched by it, and spends it.
    let (status, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({"order_id": "C-1", "status": "completed", "currency": "EUR", "total": 1500,
                    "coupon_codes": [code.to_lowercase()]}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attribution"]["matched_by"], "coupon");
    assert_eq!(reply["attribution"]["cart_id"], cart.as_str());
    m.settle().await;
    let (_, verdict) = validate(&code, "ann@example.com").await;
    assert_eq!(verdict["reason"], "used");
    assert_eq!(m.only_run(&cart).await["status"], "converted");
}

#[tokio::test]
async fn carts_with_subscription_products_get_no_coupon() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    let mut body = capture_body(&session(), "sub@example.com", 1);
    body["items"][0]["subscription"] = json!(true);
    let (status, reply) = app.capture(&body).await;
    assert_eq!(status, 202, "{reply}");
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    for hours in [1, 48, 48] {
        app.clock.advance(Duration::hours(hours));
        m.dispatch().await;
    }
    let emails = outbox_emails(app);
    assert_eq!(emails.len(), 3);
    assert_eq!(coupon_in(&emails[2].1), None);
    let (_, list) = app.admin_get("/ocart/v1/recovery/coupons").await;
    assert_eq!(list["coupons"], json!([]));
}

async fn woocommerce_coupons(kind: Kind) {
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    let m = Manual::start(kind, |c| woo.configure(c)).await;
    let app = &m.app;
    // A percentage on a custom sequence step of its own.
    let (status, reply) = settings(
        app,
        json!({"recovery": {"coupon_type": "percent", "coupon_amount": 15, "coupon_expiry_days": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    m.project().await;
    let cart = three_steps(&m, "wes@example.com").await;
    let code = coupon_in(&outbox_emails(app)[2].1).unwrap();
    let created: Vec<Value> = woo.state.coupons.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    let c = &created[0];
    assert_eq!(c["code"], code.to_lowercase());
    assert_eq!(c["discount_type"], "percent");
    assert_eq!(c["amount"], "15");
    assert_eq!(c["usage_limit"], 1);
    assert_eq!(c["individual_use"], true);
    assert_eq!(c["email_restrictions"], json!(["wes@example.com"]));
    assert_eq!(c["meta_data"][0]["value"], cart.as_str());
    let (_, list) = app.admin_get("/ocart/v1/recovery/coupons").await;
    assert_eq!(list["coupons"][0]["store_id"], 1);

    // Unused after 3 days: deleted in the store and marked expired.
    app.clock.advance(Duration::days(3));
    let report = m.dispatch().await;
    assert_eq!(report.coupons_expired, 1);
    assert!(woo.state.coupons.lock().unwrap().is_empty());
    assert!(woo
        .state
        .requests
        .lock()
        .unwrap()
        .contains(&"DELETE /wp-json/wc/v3/coupons/1".to_owned()));
    let (_, list) = app.admin_get("/ocart/v1/recovery/coupons").await;
    assert_eq!(list["coupons"][0]["status"], "expired");
    assert_eq!(events_of(app, "recovery/coupon_expired").await.len(), 1);
    // A second pass changes nothing.
    assert_eq!(m.dispatch().await.coupons_expired, 0);
}

#[tokio::test]
async fn postgres_coupons_are_created_in_woocommerce_and_expired_there() {
    woocommerce_coupons(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_coupons_are_created_in_woocommerce_and_expired_there() {
    woocommerce_coupons(Kind::Sqlite).await;
}

#[tokio::test]
async fn bad_discounts_and_coupon_settings_are_refused() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "Greedy", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "email", "delay_min": 60, "template": "recovery_email_1",
                 "discount": {"type": "percent", "amount": 120, "expiry_days": 0}}]}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2);
    assert_eq!(problem["errors"][0]["field"], "steps[0].discount");
    let (status, problem) = settings(app, json!({"recovery": {"coupon_type": "bogof"}})).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "recovery.coupon_type");
    // A step with a discount of its own saves with its coupon on.
    let (status, saved) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "Fair", "trigger_type": "checkout_abandoned", "steps": [
                {"channel": "email", "delay_min": 60, "template": "recovery_email_1",
                 "discount": {"type": "fixed_cart", "amount": 500, "expiry_days": 14}}]}),
        )
        .await;
    assert_eq!(status, 201, "{saved}");
    assert_eq!(saved["steps"][0]["coupon"], true);
    assert_eq!(saved["steps"][0]["discount"]["amount"], 500);
}
