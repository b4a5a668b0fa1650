//! What follows from an order or a delivery report is done by the recovery follow-ups, a
//! process manager that follows the log: every entry point (the order API, an admin conversion
//! over HTTP or the CLI, an event recorded while no server ran) gets the same effect.

use chrono::{Duration, Utc};
use ocart_domain::order::{order_id_for, Order, OrderCommand, OrderFacts};
use ocart_domain::recovery::{DeliveryKind, DeliveryReport, RecoveryRun, RunCommand};
use ocart_domain::{Currency, Email};
use ocart_projections::{CommandMeta, Commands, EventLog};
use ocart_tests::{spawn_app, spawn_on, test_config, Kind, TestApp};
use serde_json::{json, Value};

use crate::recovery::{capture, run_of, wait_for_emails};

/// A cart of `email` abandoned with its run open (nothing sent yet), and a second cart of the
/// same shopper, still active.
async fn two_carts(app: &TestApp, email: &str) -> (String, String) {
    let abandoned = capture(app, email).await;
    app.clock.advance(Duration::minutes(31));
    run_of(app, &abandoned, |r| r["status"] == "pending").await;
    let active = capture(app, email).await;
    app.eventually(&format!("/ocart/v1/carts/{active}"), |c| {
        c["status"] == "active"
    })
    .await;
    (abandoned, active)
}

async fn order_row(app: &TestApp, order_id: &str) -> Value {
    let list = app
        .eventually("/ocart/v1/orders", |b| {
            b["orders"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["order_id"] == order_id))
        })
        .await;
    list["orders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["order_id"] == order_id)
        .unwrap()
        .clone()
}

/// A paid order recorded while no server runs (a crash right after the append): on restart
/// the follow-ups stop the buyer's open run.
async fn an_order_recorded_before_a_crash_stops_the_buyers_runs_on_restart(kind: Kind) {
    let app = spawn_app(kind).await;
    let (abandoned, _) = two_carts(&app, "crash.order@example.com").await;
    let buyer = app
        .core
        .vault
        .subject_for_email(&Email::parse("email", "crash.order@example.com").unwrap())
        .as_str()
        .to_owned();
    let fresh = app.stop().await;
    let db = fresh.connect().await;
    let orders: Commands<Order> = Commands::new(EventLog::open(db.clone()).await.unwrap(), ());
    let now = Utc::now();
    let facts = OrderFacts {
        order_id: "CRASH-1".into(),
        status: "processing".into(),
        paid: true,
        payment_method: Some("stripe".into()),
        currency: Currency::EUR,
        total: 1250,
        email_hash: Some(buyer),
        placed_at: now,
        source: "api".into(),
        coupon_codes: Vec::new(),
        modified_at: None,
        payment: None,
        offer_lines: Vec::new(),
    };
    let outcome = orders
        .execute(
            &order_id_for("CRASH-1").to_string(),
            OrderCommand::Record {
                facts: Box::new(facts),
                attribution: None,
                at: now,
            },
            &CommandMeta::system("test", None, now),
        )
        .await
        .unwrap();
    assert!(!outcome.events.is_empty(), "the order is recorded");
    let config = test_config(&fresh);
    let app = spawn_on(fresh, config).await;
    let run = run_of(&app, &abandoned, |r| r["status"] == "stopped").await;
    assert_eq!(run["stop_reason"], "order_placed", "{run}");
}

#[tokio::test]
async fn postgres_an_order_recorded_before_a_crash_stops_the_buyers_runs_on_restart() {
    an_order_recorded_before_a_crash_stops_the_buyers_runs_on_restart(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_an_order_recorded_before_a_crash_stops_the_buyers_runs_on_restart() {
    an_order_recorded_before_a_crash_stops_the_buyers_runs_on_restart(Kind::Sqlite).await;
}

/// A hard bounce recorded while no server runs (a replayed report, a crash right after the
/// append): on restart the follow-ups suppress the recipient and stop their run.
#[tokio::test]
async fn a_hard_bounce_recorded_before_a_crash_suppresses_on_restart() {
    let app = spawn_app(Kind::Sqlite).await;
    let cart = capture(&app, "crash.bounce@example.com").await;
    app.clock.advance(Duration::minutes(31));
    run_of(&app, &cart, |r| r["status"] == "pending").await;
    app.clock.advance(Duration::minutes(45));
    let run = run_of(&app, &cart, |r| r["current_step"] == 1).await;
    assert_eq!(wait_for_emails(&app, 1).await.len(), 1);
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let (_, detail) = app
        .admin_get(&format!("/ocart/v1/recovery/runs/{run_id}"))
        .await;
    let message_key = detail["notifications"][0]["message_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let fresh = app.stop().await;
    let db = fresh.connect().await;
    let runs: Commands<RecoveryRun> = Commands::new(EventLog::open(db.clone()).await.unwrap(), ());
    let now = Utc::now();
    let report = DeliveryReport {
        kind: DeliveryKind::Bounced,
        hard: true,
        provider_id: Some("crash-1".into()),
        detail: Some("550 5.1.1 user unknown".into()),
    };
    let outcome = runs
        .execute(
            &run_id,
            RunCommand::ReportDelivery {
                message_key,
                report,
                at: now,
            },
            &CommandMeta::system("test", None, now),
        )
        .await
        .unwrap();
    assert!(!outcome.events.is_empty(), "the bounce is recorded");
    let config = test_config(&fresh);
    let app = spawn_on(fresh, config).await;
    let list = app
        .eventually("/ocart/v1/recovery/suppression", |b| {
            b["suppression"].as_array().is_some_and(|s| s.len() == 1)
        })
        .await;
    assert_eq!(list["suppression"][0]["reason"], "bounce");
    assert_eq!(list["suppression"][0]["channel"], "email");
    let run = run_of(&app, &cart, |r| r["status"] == "stopped").await;
    assert_eq!(run["stop_reason"], "suppressed", "{run}");
}

/// An admin conversion over HTTP takes the order path: an order is recorded (source `admin`,
/// attributed to the cart by its id) and the shopper's other open run stops.
#[tokio::test]
async fn an_admin_conversion_over_http_records_an_order_and_stops_the_buyers_other_runs() {
    let app = spawn_app(Kind::Sqlite).await;
    let (abandoned, active) = two_carts(&app, "admin.http@example.com").await;
    let (status, body) = app
        .post(
            &format!("/ocart/v1/carts/{active}/convert"),
            Some(&app.admin),
            &json!({"order_id": "ADM-1", "revenue": 900}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "converted");
    let order = order_row(&app, "ADM-1").await;
    assert_eq!(order["source"], "admin", "{order}");
    assert_eq!(order["paid"], true);
    assert_eq!(order["total_minor"], 900);
    assert_eq!(order["cart_id"], active.as_str());
    assert_eq!(order["matched_by"], "cart_id");
    assert_eq!(order["outcome"], "completed_before_abandonment");
    let run = run_of(&app, &abandoned, |r| r["status"] == "stopped").await;
    assert_eq!(run["stop_reason"], "order_placed", "{run}");
    // Repeating it changes nothing; converting it under another order is a conflict.
    let (status, body) = app
        .post(
            &format!("/ocart/v1/carts/{active}/convert"),
            Some(&app.admin),
            &json!({"order_id": "ADM-1", "revenue": 900}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, problem) = app
        .post(
            &format!("/ocart/v1/carts/{active}/convert"),
            Some(&app.admin),
            &json!({"order_id": "ADM-2"}),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "https://ocart.dev/problems/conflict");
    // Without an order id the order is named after the cart.
    let (_, other) = two_carts(&app, "admin.noid@example.com").await;
    let (status, body) = app
        .post(
            &format!("/ocart/v1/carts/{other}/convert"),
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let order = order_row(&app, &format!("admin-{other}")).await;
    assert_eq!(order["source"], "admin");
}

/// `ocart cart mark-converted` takes the same path as the HTTP conversion.
#[tokio::test]
async fn an_admin_conversion_from_the_cli_records_an_order_and_stops_the_buyers_other_runs() {
    let app = spawn_app(Kind::Sqlite).await;
    let (abandoned, active) = two_carts(&app, "admin.cli@example.com").await;
    let (code, out, err) = ocart_tests::ocart(
        &app.db,
        &["cart", "mark-converted", &active, "--order-id", "CLI-1"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("converted"), "{out}");
    let order = order_row(&app, "CLI-1").await;
    assert_eq!(order["source"], "admin", "{order}");
    assert_eq!(order["cart_id"], active.as_str());
    let run = run_of(&app, &abandoned, |r| r["status"] == "stopped").await;
    assert_eq!(run["stop_reason"], "order_placed", "{run}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &[
            "cart",
            "mark-converted",
            "no-such-cart",
            "--order-id",
            "CLI-2",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no cart"), "{err}");
}
