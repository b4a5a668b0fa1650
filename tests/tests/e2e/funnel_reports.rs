//! The funnel report (issue 11, section 5) through HTTP with the charger and the relay running:
//! bumps shown, taken and declined at checkout, orders with and without the bump line, upsells
//! whose hosted page is viewed (twice: one visit), accepted and charged, declined into the
//! downsell, refunded. `GET /reports/funnels`, `/reports/funnels/{id}` and the dashboard's
//! rollup count exactly that; a rebuild of the projection gives the same report; the events
//! reach JetStream under the reference's hook names.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ocart_processors::STREAM_NAME;
use ocart_tests::{spawn_app_with, spawn_on, test_config, FakeWoo, Kind, NatsServer, TestApp};
use serde_json::{json, Value};

async fn offer(app: &TestApp, path: &str, body: Value) -> String {
    let (status, created) = app.post(path, Some(&app.admin), &body).await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn order(app: &TestApp, id: &str, total: i64, extra: Value) {
    let mut body = json!({"order_id": id, "status": "processing", "currency": "EUR",
        "total": total});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, reply) = app.post("/ocart/v1/orders", Some(&app.admin), &body).await;
    assert_eq!(status, 200, "{reply}");
}

async fn token(app: &TestApp, order: &str, step: &str) -> String {
    let (status, issued) = app
        .post(
            "/ocart/v1/upsells/issue-token",
            Some(&app.admin),
            &json!({"order_id": order, "funnel_id": "main", "step": step}),
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    issued["token"].as_str().unwrap().to_owned()
}

/// The hosted page, as a browser opens it.
async fn view_page(app: &TestApp, token: &str) {
    let resp = app
        .client
        .get(app.url(&format!("/ocart/v1/upsells/page?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("<form"), "the offer is shown: {html}");
}

async fn decide(app: &TestApp, offer: &str, verb: &str, token: &str) -> Value {
    let (status, reply) = app
        .post(
            &format!("/ocart/v1/upsells/{offer}/{verb}"),
            None,
            &json!({"token": token}),
        )
        .await;
    assert!(status == 200 || status == 202, "{status} {reply}");
    reply
}

async fn accepted(app: &TestApp, order: &str, step: &str) -> Value {
    let id = ocart_domain::upsell::acceptance_id(order, "main", step);
    app.eventually(&format!("/ocart/v1/upsells/acceptances/{id}"), |a| {
        a["status"] == "accepted"
    })
    .await
}

/// Everything on `ocart.>` with a new durable pull consumer.
async fn subjects_on_the_stream(nats_url: &str) -> Vec<(String, Value)> {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to NATS");
    let js = jetstream::new(client);
    let stream = js
        .get_stream(STREAM_NAME)
        .await
        .expect("the relay created the stream");
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("funnel-report-test".into()),
            filter_subject: "ocart.>".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut received = Vec::new();
    loop {
        let mut batch = consumer
            .batch()
            .max_messages(500)
            .expires(Duration::from_millis(1500))
            .messages()
            .await
            .expect("pull a batch");
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.expect("message");
            let body: Value = serde_json::from_slice(&message.payload).expect("JSON");
            received.push((message.subject.to_string(), body));
            message.ack().await.expect("ack");
            got += 1;
        }
        if got == 0 {
            return received;
        }
    }
}

fn step<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == key)
        .unwrap_or_else(|| panic!("step {key} in {report}"))
}

async fn the_funnel_report_counts_a_whole_funnel(kind: Kind) {
    let nats = NatsServer::start();
    let nats_url = nats.url();
    let woo = FakeWoo::start().await;
    let app = spawn_app_with(kind, |c| {
        woo.configure(c);
        c.nats_url = Some(nats_url.clone());
    })
    .await;

    let bump = offer(
        &app,
        "/ocart/v1/bumps",
        json!({"name": "Gift wrap", "currency": "EUR",
            "product": {"product_id": 7, "name": "Gift wrap", "price": 500, "quantity": 1},
            "pricing": {"type": "fixed_addon", "amount": 300}}),
    )
    .await;
    let product = json!({"product_id": 77, "name": "Mug warmer", "price": 2500, "quantity": 1});
    let upsell = offer(
        &app,
        "/ocart/v1/upsells",
        json!({"name": "Warmer", "currency": "EUR", "product": product,
            "pricing": {"type": "discount_pct", "value": "20"}}),
    )
    .await;
    let downsell = offer(
        &app,
        "/ocart/v1/upsells",
        json!({"name": "Warmer, less", "kind": "downsell", "currency": "EUR",
            "product": product, "pricing": {"type": "price", "amount": 1500}}),
    )
    .await;
    let (status, funnel) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": "main", "name": "Main", "status": "active", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "bump"}},
                {"key": "bump", "type": "bump", "offer_id": bump, "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": upsell,
                 "branches": {"accepted": "thanks", "declined": "downsell"}},
                {"key": "downsell", "type": "downsell", "offer_id": downsell,
                 "branches": {"default": "thanks"}},
                {"key": "thanks", "type": "thank_you"}]}),
        )
        .await;
    assert_eq!(status, 201, "{funnel}");
    app.settle().await;

    // Checkout: two carts are shown the bump (twice each: one visit each); one takes it.
    let taker = ocart_tests::session();
    let decliner = ocart_tests::session();
    for (session, verb) in [(&taker, "accept"), (&decliner, "decline")] {
        let (status, _) = app
            .capture(&ocart_tests::capture_body(session, "fay@example.com", 1))
            .await;
        assert_eq!(status, 202);
        for _ in 0..2 {
            let (status, eligible) = app
                .get(
                    &format!("/ocart/v1/bumps/eligible?session_token={session}"),
                    &app.admin,
                )
                .await;
            assert_eq!(status, 200, "{eligible}");
            assert_eq!(eligible["bumps"].as_array().unwrap().len(), 1, "{eligible}");
        }
        let (status, decided) = app
            .post(
                &format!("/ocart/v1/bumps/{bump}/{verb}"),
                None,
                &json!({"session_token": session}),
            )
            .await;
        assert_eq!(status, 200, "{decided}");
    }

    // Orders: 7001 with the bump line, 7002 and 7004 without; 7003 with no saved payment and no
    // offer line belongs to no funnel.
    let payment = json!({"gateway": "sandbox", "payment_method": "pm_sandbox_ok"});
    order(
        &app,
        "7001",
        2800,
        json!({"session_token": taker, "payment": payment,
            "lines": [{"product_id": 7, "quantity": 1, "total": 300, "offer_id": bump}]}),
    )
    .await;
    order(&app, "7002", 4000, json!({"payment": payment})).await;
    order(&app, "7003", 1000, json!({})).await;
    order(&app, "7004", 4000, json!({"payment": payment})).await;

    // 7001: the upsell page viewed twice (one visit), accepted, charged, refunded in part.
    let t1 = token(&app, "7001", "upsell").await;
    view_page(&app, &t1).await;
    view_page(&app, &t1).await;
    decide(&app, &upsell, "accept", &t1).await;
    let acceptance = accepted(&app, "7001", "upsell").await;
    assert_eq!(acceptance["amount"], 2000, "{acceptance}");
    let (status, refund) = app
        .post(
            &format!(
                "/ocart/v1/upsells/acceptances/{}/refund",
                acceptance["acceptance_id"].as_str().unwrap()
            ),
            Some(&app.admin),
            &json!({"amount": 500, "refund_id": "r-1"}),
        )
        .await;
    assert_eq!(status, 202, "{refund}");
    let id = acceptance["acceptance_id"].as_str().unwrap().to_owned();
    app.eventually(&format!("/ocart/v1/upsells/acceptances/{id}"), |a| {
        a["refunded"] == 500
    })
    .await;

    // 7002: the upsell viewed and declined, the downsell viewed and accepted.
    let t2 = token(&app, "7002", "upsell").await;
    view_page(&app, &t2).await;
    let declined = decide(&app, &upsell, "decline", &t2).await;
    let next = declined["next"]["token"].as_str().unwrap().to_owned();
    view_page(&app, &next).await;
    decide(&app, &downsell, "accept", &next).await;
    accepted(&app, "7002", "downsell").await;

    // 7004: the upsell viewed and declined; no downsell taken.
    let t4 = token(&app, "7004", "upsell").await;
    view_page(&app, &t4).await;
    decide(&app, &upsell, "decline", &t4).await;
    app.settle().await;

    let (status, report) = app.admin_get("/ocart/v1/reports/funnels").await;
    assert_eq!(status, 200, "{report}");
    let funnels = report["funnels"].as_array().unwrap();
    assert_eq!(funnels.len(), 1, "{report}");
    let main = &funnels[0];
    assert_eq!(main["funnel_id"], "main");
    let keys: Vec<&str> = main["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["checkout", "bump", "upsell", "downsell", "thanks"]);
    let expect = |key: &str,
                  visits: Value,
                  accepted: i64,
                  declined: i64,
                  take: Value,
                  revenue: Value,
                  refunds: Value| {
        let s = step(main, key);
        assert_eq!(s["visits"], visits, "{key}: {s}");
        assert_eq!(s["accepted"], accepted, "{key}: {s}");
        assert_eq!(s["declined"], declined, "{key}: {s}");
        assert_eq!(s["take_rate"], take, "{key}: {s}");
        assert_eq!(s["revenue"], revenue, "{key}: {s}");
        assert_eq!(s["refunds"], refunds, "{key}: {s}");
    };
    expect(
        "checkout",
        Value::Null,
        0,
        0,
        Value::Null,
        json!({}),
        json!({}),
    );
    expect(
        "bump",
        json!(2),
        1,
        1,
        json!(0.5),
        json!({"EUR": 300}),
        json!({}),
    );
    expect(
        "upsell",
        json!(3),
        1,
        2,
        json!(1.0 / 3.0),
        json!({"EUR": 2000}),
        json!({"EUR": 500}),
    );
    expect(
        "downsell",
        json!(1),
        1,
        0,
        json!(1.0),
        json!({"EUR": 1500}),
        json!({}),
    );
    expect(
        "thanks",
        Value::Null,
        0,
        0,
        Value::Null,
        json!({}),
        json!({}),
    );
    // 7001: 2800 + 2000 and 7002: 4000 + 1500 with offers; 7004: 4000 without.
    assert_eq!(main["orders"], 3, "{main}");
    assert_eq!(main["orders_with_offers"], 2, "{main}");
    assert_eq!(main["orders_without_offers"], 1, "{main}");
    assert_eq!(main["revenue"], json!({"EUR": 14300}), "{main}");
    assert_eq!(main["revenue_with_offers"], json!({"EUR": 10300}), "{main}");
    assert_eq!(
        main["revenue_without_offers"],
        json!({"EUR": 4000}),
        "{main}"
    );
    assert_eq!(main["average_order_value"], json!({"EUR": 4766}), "{main}");
    assert_eq!(main["aov_with_offers"], json!({"EUR": 5150}), "{main}");
    assert_eq!(main["aov_without_offers"], json!({"EUR": 4000}), "{main}");

    let (status, one) = app.admin_get("/ocart/v1/reports/funnels/main").await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(&one, main);
    let (status, filtered) = app
        .admin_get("/ocart/v1/reports/funnels?funnel_id=main")
        .await;
    assert_eq!((status, &filtered), (200, &report));

    // The offer report counts each upsell page once per parent order and step as shown, so
    // its take rate is accepted / shown as a bump's is.
    for (offer_id, shown, accepted, declined, take) in [
        (&bump, 2, 1, 1, json!(0.5)),
        (&upsell, 3, 1, 2, json!(1.0 / 3.0)),
        (&downsell, 1, 1, 0, json!(1.0)),
    ] {
        let (status, rows) = app
            .admin_get(&format!("/ocart/v1/reports/offers?offer_id={offer_id}"))
            .await;
        assert_eq!(status, 200, "{rows}");
        let row = rows["offers"]
            .as_array()
            .and_then(|rows| rows.first())
            .unwrap_or_else(|| panic!("{offer_id}: {rows}"));
        assert_eq!(row["shown"], shown, "{offer_id}: {row}");
        assert_eq!(row["accepted"], accepted, "{offer_id}: {row}");
        assert_eq!(row["declined"], declined, "{offer_id}: {row}");
        assert_eq!(row["take_rate"], take, "{offer_id}: {row}");
    }

    // The dashboard keeps its fields and adds the offer and funnel totals (its window ends
    // before now: a second later, everything above is in it).
    app.clock.advance(chrono::Duration::seconds(1));
    let (status, dashboard) = app.admin_get("/ocart/v1/reports/dashboard?days=30").await;
    assert_eq!(status, 200, "{dashboard}");
    for field in ["days", "since", "until", "orders", "recovery"] {
        assert!(dashboard.get(field).is_some(), "{field}: {dashboard}");
    }
    assert_eq!(dashboard["orders"]["orders"], 4, "{dashboard}");
    let offers = &dashboard["offers"];
    // Shown: two bumps and four upsell pages; taken: a bump, the upsell and the downsell.
    assert_eq!(offers["shown"], 6, "{dashboard}");
    assert_eq!(offers["accepted"], 3, "{dashboard}");
    assert_eq!(offers["declined"], 3, "{dashboard}");
    assert_eq!(offers["charged"], 2, "{dashboard}");
    assert_eq!(offers["take_rate"], 0.5, "{dashboard}");
    assert_eq!(offers["revenue"], json!({"EUR": 3800}), "{dashboard}");
    assert_eq!(offers["refunds"], json!({"EUR": 500}), "{dashboard}");
    let totals = &dashboard["funnels"];
    for field in [
        "orders",
        "orders_with_offers",
        "orders_without_offers",
        "revenue",
        "revenue_with_offers",
        "revenue_without_offers",
        "average_order_value",
        "aov_with_offers",
        "aov_without_offers",
    ] {
        assert_eq!(totals[field], main[field], "{field}: {dashboard}");
    }

    // Strict queries, capabilities, unknown funnels.
    for path in [
        "/ocart/v1/reports/funnels?bogus=1",
        "/ocart/v1/reports/funnels?funnel_id=Not%20a%20slug",
        "/ocart/v1/reports/funnels/main?bogus=1",
        "/ocart/v1/reports/funnels/Bad_Slug",
    ] {
        let resp = app
            .client
            .get(app.url(path))
            .bearer_auth(&app.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 422, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let (status, missing) = app.admin_get("/ocart/v1/reports/funnels/nowhere").await;
    assert_eq!(status, 404, "{missing}");
    let (_, recovery_only) = app.token_with(&["ocart_manage_recovery"]).await;
    let (status, _) = app.get("/ocart/v1/reports/funnels", &recovery_only).await;
    assert_eq!(status, 403);
    let (_, reports_only) = app.token_with(&["ocart_view_reports"]).await;
    let (status, _) = app.get("/ocart/v1/reports/funnels", &reports_only).await;
    assert_eq!(status, 200);
    let resp = app
        .client
        .get(app.url("/ocart/v1/reports/funnels"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // The hooks reach JetStream with their subjects.
    app.eventually("/ocart/v1/info", |i| {
        i["projections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "nats_relay" && p["lag"] == 0)
    })
    .await;
    let received = subjects_on_the_stream(&nats_url).await;
    let subjects: BTreeSet<&str> = received.iter().map(|(s, _)| s.as_str()).collect();
    for hook in [
        "bump/shown",
        "bump/accepted",
        "bump/declined",
        "upsell/shown",
        "upsell/before_charge",
        "upsell/accepted",
        "upsell/declined",
        "upsell/refunded",
    ] {
        let subject = format!("ocart.{}", hook.replace('/', "."));
        assert!(
            subjects.contains(subject.as_str()),
            "{subject} in {subjects:?}"
        );
        let (_, body) = received.iter().find(|(s, _)| *s == subject).unwrap();
        assert_eq!(body["type"], hook, "{body}");
    }
    let shown: Vec<&Value> = received
        .iter()
        .filter(|(s, _)| s == "ocart.upsell.shown")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(shown.len(), 4, "one visit per order and step");
    assert!(shown
        .iter()
        .any(|b| b["payload"]["parent_order_id"] == "7002" && b["payload"]["kind"] == "downsell"));

    // A rebuild of the projection gives the same report.
    let db = app.stop().await;
    let (code, out, err) =
        ocart_tests::ocart(&db, &["replay", "--projection", "funnel_reports", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let config = test_config(&db);
    let again = spawn_on(db, config).await;
    again.clock.advance(chrono::Duration::seconds(1));
    again.settle().await;
    let (status, rebuilt) = again.admin_get("/ocart/v1/reports/funnels").await;
    assert_eq!(status, 200);
    assert_eq!(rebuilt, report, "a rebuild gives the live report");
    let (_, rebuilt_dashboard) = again.admin_get("/ocart/v1/reports/dashboard?days=30").await;
    assert_eq!(rebuilt_dashboard["funnels"], dashboard["funnels"]);
    assert_eq!(rebuilt_dashboard["offers"], dashboard["offers"]);
}

#[tokio::test]
async fn postgres_the_funnel_report_counts_a_whole_funnel_and_its_hooks_reach_jetstream() {
    the_funnel_report_counts_a_whole_funnel(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_the_funnel_report_counts_a_whole_funnel_and_its_hooks_reach_jetstream() {
    the_funnel_report_counts_a_whole_funnel(Kind::Sqlite).await;
}
