//! What stops or holds back a sequence: an order, the quiet period, the master switch, the
//! maximum age, an admin's stop.

use chrono::Duration;
use ocart_tests::{outbox_emails, spawn_app, Kind};
use serde_json::json;

use super::{capture, events_of, header, run_of, wait_for_emails, Manual};

/// An order placed between two steps converts the run with the revenue and stops it.
#[tokio::test]
async fn an_order_between_steps_converts_the_run_and_stops_the_sequence() {
    let app = spawn_app(Kind::Sqlite).await;
    let cart = capture(&app, "bob@example.com").await;
    app.clock.advance(Duration::minutes(31));
    run_of(&app, &cart, |r| r["status"] == "pending").await;
    app.clock.advance(Duration::minutes(45));
    run_of(&app, &cart, |r| r["current_step"] == 1).await;
    assert_eq!(wait_for_emails(&app, 1).await.len(), 1);
    let (status, body) = app
        .post(
            &format!("/ocart/v1/carts/{cart}/convert"),
            Some(&app.admin),
            &json!({"order_id": "1042", "revenue": 2500}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = run_of(&app, &cart, |r| r["status"] == "converted").await;
    assert_eq!(run["revenue_recovered"], 2500);
    assert_eq!(run["order_id"], "1042");
    let converted = events_of(&app, "recovery/converted").await;
    assert_eq!(converted.len(), 1);
    assert_eq!(converted[0]["revenue"], 2500);
    let (_, detail) = app
        .admin_get(&format!(
            "/ocart/v1/recovery/runs/{}",
            run["run_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(detail["notifications"][1]["status"], "canceled");
    app.clock.advance(Duration::days(4));
    app.settle().await;
    assert_eq!(outbox_emails(&app).len(), 1);
}

/// One shopper with three abandoned carts gets one sequence, not three.
#[tokio::test]
async fn a_shopper_with_three_carts_receives_one_sequence() {
    let app = spawn_app(Kind::Sqlite).await;
    let carts = [
        capture(&app, "cara@example.com").await,
        capture(&app, "cara@example.com").await,
        capture(&app, "cara@example.com").await,
    ];
    app.clock.advance(Duration::minutes(31));
    for cart in &carts {
        run_of(&app, cart, |r| r["status"] == "pending").await;
    }
    app.clock.advance(Duration::minutes(45));
    let mut sent = 0;
    let mut quiet = 0;
    for cart in &carts {
        let run = run_of(&app, cart, |r| {
            r["current_step"] == 1 || r["status"] == "stopped"
        })
        .await;
        if run["current_step"] == 1 {
            sent += 1;
        } else {
            assert_eq!(run["stop_reason"], "quiet_period");
            quiet += 1;
        }
    }
    assert_eq!((sent, quiet), (1, 2));
    assert_eq!(outbox_emails(&app).len(), 1);
}

/// With recovery switched off, carts are still captured and abandoned, but no run opens.
#[tokio::test]
async fn the_master_switch_off_opens_no_runs() {
    let app = spawn_app(Kind::Sqlite).await;
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&json!({"recovery": {"enabled": false}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cart = capture(&app, "dan@example.com").await;
    app.clock.advance(Duration::minutes(31));
    app.eventually(&format!("/ocart/v1/carts/{cart}"), |c| {
        c["status"] == "abandoned"
    })
    .await;
    // Let the opener see the abandonment; still no run.
    app.settle().await;
    let (_, page) = app
        .admin_get(&format!("/ocart/v1/recovery/runs?cart_id={cart}"))
        .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 0, "{page}");
    assert!(events_of(&app, "recovery/run_started").await.is_empty());
}

/// Carts abandoned longer ago than `recovery.max_age_days` are stopped, not mailed, even when
/// the dispatcher comes back after a long downtime; within the age, overdue steps still go.
#[tokio::test]
async fn carts_older_than_the_maximum_age_are_not_mailed() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let old = capture(&m.app, "gus@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    m.app.clock.advance(Duration::days(3));
    let recent = capture(&m.app, "hal@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    // Down for five days: the first cart is now eight days abandoned, the second five.
    m.app.clock.advance(Duration::days(5));
    let report = m.dispatch().await;
    assert_eq!(report.stopped, 1);
    let stopped = m.only_run(&old).await;
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["stop_reason"], "too_old");
    // The recent cart's overdue step went out (one step per pass, 15 minutes apart).
    assert_eq!(m.only_run(&recent).await["current_step"], 1);
    let emails = outbox_emails(&m.app);
    assert_eq!(emails.len(), 1);
    assert!(header(&emails[0].1, "To")
        .unwrap()
        .contains("hal@example.com"));
}

/// `POST /recovery/runs/{id}/stop` ends a run; the dispatcher sends nothing for it.
#[tokio::test]
async fn an_admin_can_stop_a_run() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let cart = capture(&m.app, "ida@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    let run_id = m.only_run(&cart).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = m
        .app
        .post(
            &format!("/ocart/v1/recovery/runs/{run_id}/stop"),
            Some(&m.app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "stopped");
    // Processors are off here: project before the next authenticated request.
    m.project().await;
    let (status, _) = m
        .app
        .post(
            "/ocart/v1/recovery/runs/nope/stop",
            Some(&m.app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    m.app.clock.advance(Duration::hours(2));
    assert_eq!(m.dispatch().await.sent, 0);
    let run = m.only_run(&cart).await;
    assert_eq!(run["stop_reason"], "manual");
    assert!(outbox_emails(&m.app).is_empty());
    let (status, page) = m
        .app
        .admin_get("/ocart/v1/recovery/runs?status=bogus")
        .await;
    assert_eq!(status, 422, "{page}");
}
