//! Offers over HTTP: the bump and upsell CRUD round trip and the problems that name the field,
//! eligible bumps by targeting with their quotes (public, by session token), accepting and
//! declining through the public endpoints (recorded once), the offer report, a paid order's
//! bump line counted as revenue once however often its webhook is replayed, the saved payment
//! on the order, and the capabilities.

use ocart_tests::{
    capture_body, read, session, spawn_app, spawn_app_with, wc_order, Kind, TestApp,
};
use serde_json::{json, Value};

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    read(req.send().await.expect("request")).await
}

fn bump(name: &str, pricing: Value, targeting: Value) -> Value {
    json!({
        "name": name,
        "currency": "EUR",
        "product": {"product_id": 7, "name": "Gift wrap", "price": 1500, "quantity": 1},
        "pricing": pricing,
        "targeting": targeting,
        "display": {"headline": format!("Add {name}"), "copy": "Nicely wrapped",
                    "image_url": "https://shop.example/wrap.png"}
    })
}

async fn create_bump(app: &TestApp, body: &Value) -> String {
    let (status, created) = app.post("/ocart/v1/bumps", Some(&app.admin), body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn crud_round_trip(kind: Kind) {
    let app = spawn_app(kind).await;
    let id = create_bump(
        &app,
        &bump(
            "wrap",
            json!({"type": "percent_addon", "value": 12.5}),
            json!({"all": []}),
        ),
    )
    .await;
    let (status, shown) = app.admin_get(&format!("/ocart/v1/bumps/{id}")).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["kind"], "bump");
    assert_eq!(shown["status"], "active");
    assert_eq!(
        shown["pricing"],
        json!({"type": "percent_addon", "value": "12.5"})
    );
    assert_eq!(shown["display"]["position"], "above_payment");

    let (status, patched) = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/ocart/v1/bumps/{id}"),
        Some(&app.admin),
        Some(&json!({"name": "Wrap it", "display": {"position": "in_summary"}})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Wrap it");
    assert_eq!(patched["display"]["position"], "in_summary");
    assert_eq!(
        patched["display"]["headline"], "Add wrap",
        "the patch merges"
    );

    // An upsell, by default kind upsell, priced off the product.
    let (status, upsell) = app
        .post(
            "/ocart/v1/upsells",
            Some(&app.admin),
            &json!({"name": "Pro mug", "currency": "EUR",
                    "product": {"product_id": "sku-pro", "name": "Pro mug", "price": 3000},
                    "pricing": {"type": "discount_pct", "value": "15"},
                    "page_template": "<h1>{{ offer.name }}</h1>"}),
        )
        .await;
    assert_eq!(status, 201, "{upsell}");
    assert_eq!(upsell["kind"], "upsell");
    assert_eq!(upsell["page_template"], "<h1>{{ offer.name }}</h1>");
    let upsell_id = upsell["id"].as_str().unwrap();
    let (status, _) = app.admin_get(&format!("/ocart/v1/bumps/{upsell_id}")).await;
    assert_eq!(status, 404, "an upsell is not a bump");

    let (status, list) = app.admin_get("/ocart/v1/bumps").await;
    assert_eq!(status, 200);
    assert_eq!(list["offers"].as_array().unwrap().len(), 1);
    let (status, list) = app.admin_get("/ocart/v1/upsells").await;
    assert_eq!(status, 200);
    assert_eq!(list["offers"][0]["id"], upsell_id);

    let (status, archived) = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/ocart/v1/bumps/{id}"),
        Some(&app.admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["status"], "archived");
    let (_, list) = app.admin_get("/ocart/v1/bumps").await;
    assert_eq!(list["offers"].as_array().unwrap().len(), 0);
    let (_, list) = app.admin_get("/ocart/v1/bumps?include_archived=true").await;
    assert_eq!(list["offers"][0]["status"], "archived");
    let (status, _) = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/ocart/v1/bumps/{id}"),
        Some(&app.admin),
        Some(&json!({"name": "again"})),
    )
    .await;
    assert_eq!(status, 409, "an archived bump does not change");

    // Problems name the field.
    let cases = [
        (
            "/ocart/v1/bumps",
            bump(
                "x",
                json!({"type": "price", "amount": 1999}),
                json!({"all": []}),
            ),
            "pricing.type",
        ),
        (
            "/ocart/v1/upsells",
            bump(
                "x",
                json!({"type": "fixed_addon", "amount": 1}),
                json!({"all": []}),
            ),
            "pricing.type",
        ),
        (
            "/ocart/v1/bumps",
            bump(
                "x",
                json!({"type": "percent_addon", "value": "1.005"}),
                json!({"all": []}),
            ),
            "pricing.value",
        ),
        (
            "/ocart/v1/bumps",
            bump(
                "x",
                json!({"type": "fixed_addon", "amount": 100_000_000_001_i64}),
                json!({"all": []}),
            ),
            "pricing.amount",
        ),
        (
            "/ocart/v1/bumps",
            bump(
                "x",
                json!({"type": "fixed_addon", "amount": 1}),
                json!({"all": [{"cart_min_total": -1}]}),
            ),
            "targeting.all[0].cart_min_total",
        ),
        (
            "/ocart/v1/upsells",
            json!({"name": "x", "currency": "EUR", "product": {"product_id": 1, "name": "p"},
                   "pricing": {"type": "discount_pct", "value": "15"}}),
            "product.price",
        ),
    ];
    for (path, body, field) in cases {
        let (status, problem) = app.post(path, Some(&app.admin), &body).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert!(
            fields(&problem).contains(&field.to_owned()),
            "{field}: {problem}"
        );
    }
}

#[tokio::test]
async fn postgres_offers_round_trip_and_name_the_field_they_refuse() {
    crud_round_trip(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_offers_round_trip_and_name_the_field_they_refuse() {
    crud_round_trip(Kind::Sqlite).await;
}

/// Bumps of every targeting; the cart holds two mugs (product 42, category kitchen), 25.00.
async fn bumps_for_targeting(app: &TestApp) -> Vec<(&'static str, String)> {
    let fixed = json!({"type": "fixed_addon", "amount": 2400});
    let specs = [
        (
            "met minimum",
            fixed.clone(),
            json!({"cart_min_total": 2000}),
        ),
        (
            "unmet minimum",
            fixed.clone(),
            json!({"cart_min_total": 5000}),
        ),
        (
            "product",
            json!({"type": "percent_addon", "value": "10"}),
            json!({"product_in_cart": 42}),
        ),
        (
            "category",
            json!({"type": "free_gift", "cart_min_total": 2000}),
            json!({"category_in_cart": "KITCHEN"}),
        ),
        (
            "none group",
            fixed.clone(),
            json!({"none": [{"product_in_cart": 42}]}),
        ),
        (
            "gift out of reach",
            json!({"type": "free_gift", "cart_min_total": 9000}),
            json!({"all": []}),
        ),
    ];
    let mut ids = Vec::new();
    for (name, pricing, targeting) in specs {
        ids.push((
            name,
            create_bump(app, &bump(name, pricing, targeting)).await,
        ));
    }
    let mut usd = bump("dollars", fixed, json!({"all": []}));
    usd["currency"] = json!("USD");
    ids.push(("other currency", create_bump(app, &usd).await));
    ids
}

async fn eligible_by_targeting(kind: Kind) {
    let app = spawn_app(kind).await;
    let ids = bumps_for_targeting(&app).await;
    let id = |name: &str| ids.iter().find(|(n, _)| *n == name).unwrap().1.clone();
    let shopper = session();
    let (status, _) = app
        .capture(&capture_body(&shopper, "ann@example.com", 2))
        .await;
    assert_eq!(status, 202);
    app.settle().await;

    // Public: no bearer token, the session token names the cart.
    let resp = app
        .client
        .get(app.url(&format!("/ocart/v1/bumps/eligible?session_token={shopper}")))
        .send()
        .await
        .unwrap();
    let (status, eligible) = read(resp).await;
    assert_eq!(status, 200, "{eligible}");
    let bumps = eligible["bumps"].as_array().unwrap();
    let mut got: Vec<(String, i64, Value, i64)> = bumps
        .iter()
        .map(|b| {
            (
                b["offer_id"].as_str().unwrap().to_owned(),
                b["price"].as_i64().unwrap(),
                b["regular"].clone(),
                b["saving"].as_i64().unwrap(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (id("met minimum"), 2400, Value::Null, 0),
        (id("product"), 250, Value::Null, 0),
        (id("category"), 0, json!(1500), 1500),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, expected, "{eligible}");
    let met = bumps
        .iter()
        .find(|b| b["offer_id"] == id("met minimum").as_str())
        .unwrap();
    assert_eq!(met["headline"], "Add met minimum");
    assert_eq!(met["position"], "above_payment");
    assert_eq!(met["currency"], "EUR");
    assert_eq!(met["product_id"], 7);

    // Shown once each, however often the checkout asks.
    let again = app
        .client
        .get(app.url(&format!("/ocart/v1/bumps/eligible?session_token={shopper}")))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);
    app.settle().await;
    let (status, report) = app.admin_get("/ocart/v1/reports/offers").await;
    assert_eq!(status, 200, "{report}");
    let shown: Vec<(String, i64)> = report["offers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["shown"].as_i64().unwrap() > 0)
        .map(|o| {
            (
                o["offer_id"].as_str().unwrap().to_owned(),
                o["shown"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown.len(), 3, "{report}");
    assert!(shown.iter().all(|(_, n)| *n == 1), "{report}");

    let (status, missing) = read(
        app.client
            .get(app.url(&format!(
                "/ocart/v1/bumps/eligible?session_token={}",
                session()
            )))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "{missing}");
}

#[tokio::test]
async fn postgres_eligible_bumps_follow_targeting_with_quotes() {
    eligible_by_targeting(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_eligible_bumps_follow_targeting_with_quotes() {
    eligible_by_targeting(Kind::Sqlite).await;
}

async fn report_of(app: &TestApp, offer_id: &str) -> Value {
    let (status, report) = app
        .admin_get(&format!("/ocart/v1/reports/offers?offer_id={offer_id}"))
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["offers"].as_array().unwrap().len(), 1, "{report}");
    report["offers"][0].clone()
}

async fn accept_and_decline(kind: Kind) {
    let app = spawn_app(kind).await;
    let wrap = create_bump(
        &app,
        &bump(
            "wrap",
            json!({"type": "fixed_addon", "amount": 2400}),
            json!({"all": []}),
        ),
    )
    .await;
    let card = create_bump(
        &app,
        &bump(
            "card",
            json!({"type": "fixed_addon", "amount": 300}),
            json!({"all": []}),
        ),
    )
    .await;
    let shopper = session();
    assert_eq!(
        app.capture(&capture_body(&shopper, "ann@example.com", 2))
            .await
            .0,
        202
    );
    app.settle().await;
    let (status, _) = app
        .get(
            &format!("/ocart/v1/bumps/eligible?session_token={shopper}"),
            "",
        )
        .await;
    assert_eq!(status, 200);

    let token = json!({"session_token": shopper});
    let (status, accepted) = app
        .post(&format!("/ocart/v1/bumps/{wrap}/accept"), None, &token)
        .await;
    assert_eq!(status, 200, "{accepted}");
    assert_eq!(
        accepted["line"],
        json!({"product_id": 7, "quantity": 1, "price": 2400, "currency": "EUR",
               "meta": {"_ocart_offer_id": wrap}})
    );
    assert!(accepted["position"].is_i64());
    let (status, again) = app
        .post(&format!("/ocart/v1/bumps/{wrap}/accept"), None, &token)
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["line"], accepted["line"],
        "a repeat answers the same line"
    );
    assert!(again["position"].is_null(), "a repeat records nothing");

    let (status, declined) = app
        .post(&format!("/ocart/v1/bumps/{card}/decline"), None, &token)
        .await;
    assert_eq!(status, 200, "{declined}");
    assert_eq!(declined["answer"], "declined");

    let (status, problem) = app
        .post(&format!("/ocart/v1/bumps/{wrap}/accept"), None, &json!({}))
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = app
        .post(
            &format!("/ocart/v1/bumps/{}/accept", uuid::Uuid::now_v7()),
            None,
            &token,
        )
        .await;
    assert_eq!(status, 404);

    app.settle().await;
    let report = report_of(&app, &wrap).await;
    assert_eq!(report["shown"], 1, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["declined"], 0, "{report}");
    assert_eq!(report["take_rate"], 1.0, "{report}");
    let report = report_of(&app, &card).await;
    assert_eq!(report["accepted"], 0, "{report}");
    assert_eq!(report["declined"], 1, "{report}");
    assert_eq!(report["take_rate"], 0.0, "{report}");
}

#[tokio::test]
async fn postgres_bumps_are_accepted_and_declined_once_by_session_token() {
    accept_and_decline(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_bumps_are_accepted_and_declined_once_by_session_token() {
    accept_and_decline(Kind::Sqlite).await;
}

const SECRET: &str = "whsec-offers";

async fn revenue_once(kind: Kind) {
    let app = spawn_app_with(kind, |c| {
        c.woocommerce.webhook_secret = Some(SECRET.into());
    })
    .await;
    let wrap = create_bump(
        &app,
        &bump(
            "wrap",
            json!({"type": "fixed_addon", "amount": 2400}),
            json!({"all": []}),
        ),
    )
    .await;
    let mut order = wc_order(5001, "processing", "stripe", "49.00", "ann@example.com");
    order["line_items"] = json!([
        {"id": 1, "product_id": 42, "quantity": 2, "total": "25.00"},
        {"id": 2, "product_id": 7, "quantity": 1, "total": "24.00",
         "meta_data": [{"id": 3, "key": "_ocart_offer_id", "value": wrap}]}
    ]);
    order["meta_data"] = json!([
        {"id": 4, "key": "_stripe_customer_id", "value": "cus_123"},
        {"id": 5, "key": "_stripe_source_id", "value": "pm_456"}
    ]);
    for _ in 0..3 {
        let (status, body) = app.wc_webhook("order.updated", &order, Some(SECRET)).await;
        assert_eq!(status, 200, "{body}");
    }
    app.settle().await;
    let report = report_of(&app, &wrap).await;
    assert_eq!(report["revenue"], json!({"EUR": 2400}), "{report}");
    let (status, stored) = app.admin_get("/ocart/v1/orders/5001").await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(
        stored["payment"],
        json!({"gateway": "stripe", "customer": "cus_123", "payment_method": "pm_456"})
    );
    assert_eq!(stored["offer_lines"][0]["offer_id"], wrap);
    assert_eq!(stored["offer_lines"][0]["total"], 2400);

    // The order API takes the payment and the lines as they are.
    let api_order = json!({
        "order_id": "A-1", "status": "completed", "currency": "EUR", "total": 2700,
        "payment": {"gateway": "sandbox", "payment_method": "sandbox_ok"},
        "lines": [{"product_id": 7, "quantity": 1, "total": 300, "offer_id": wrap}]
    });
    for _ in 0..2 {
        let (status, body) = app
            .post("/ocart/v1/orders", Some(&app.admin), &api_order)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    app.settle().await;
    let report = report_of(&app, &wrap).await;
    assert_eq!(report["revenue"], json!({"EUR": 2700}), "{report}");
    let (_, stored) = app.admin_get("/ocart/v1/orders/A-1").await;
    assert_eq!(stored["payment"]["gateway"], "sandbox");
    assert!(stored["payment"].get("customer").is_none(), "{stored}");

    let mut bad = api_order.clone();
    bad["order_id"] = json!("A-2");
    bad["payment"] = json!({"gateway": "visa", "payment_method": "pm 1"});
    bad["lines"][0]["quantity"] = json!(0);
    let (status, problem) = app.post("/ocart/v1/orders", Some(&app.admin), &bad).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        fields(&problem),
        [
            "payment.gateway",
            "payment.payment_method",
            "lines[0].quantity"
        ]
    );
}

#[tokio::test]
async fn postgres_a_paid_orders_bump_line_counts_revenue_once() {
    revenue_once(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_paid_orders_bump_line_counts_revenue_once() {
    revenue_once(Kind::Sqlite).await;
}

#[tokio::test]
async fn offers_need_their_capability() {
    let app = spawn_app(Kind::Sqlite).await;
    let body = bump(
        "wrap",
        json!({"type": "fixed_addon", "amount": 1}),
        json!({"all": []}),
    );
    let (_, reports) = app.token_with(&["ocart_view_reports"]).await;
    let (_, recovery) = app.token_with(&["ocart_manage_recovery"]).await;
    let (_, offers) = app.token_with(&["ocart_manage_offers"]).await;
    assert_eq!(app.get("/ocart/v1/bumps", &reports).await.0, 200);
    assert_eq!(app.get("/ocart/v1/reports/offers", &reports).await.0, 200);
    let (status, problem) = app.post("/ocart/v1/bumps", Some(&reports), &body).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(app.get("/ocart/v1/upsells", &recovery).await.0, 403);
    assert_eq!(
        app.post("/ocart/v1/upsells", Some(&recovery), &body)
            .await
            .0,
        403
    );
    assert_eq!(
        app.post("/ocart/v1/bumps", Some(&offers), &body).await.0,
        201
    );
    // A cart id instead of the session token needs the capability too.
    let (status, _) = app
        .get(
            &format!("/ocart/v1/bumps/eligible?cart_id={}", uuid::Uuid::now_v7()),
            &reports,
        )
        .await;
    assert_eq!(status, 403);
}
