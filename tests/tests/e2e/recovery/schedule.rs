//! The three-email schedule over a real SMTP conversation, and retries of a failed send.

use chrono::Duration;
use ocart_tests::{spawn_app_with, Kind, SmtpSink};

use super::{capture, events_of, run_of, Manual};

/// Capture → abandon → three emails over SMTP at 45 minutes, 24 hours and 72 hours, with the
/// unsubscribe headers; then the run completes and sends nothing more.
async fn three_emails_over_smtp(kind: Kind) {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with(kind, |c| sink.configure(c)).await;
    let cart = capture(&app, "ann@example.com").await;
    app.clock.advance(Duration::minutes(31));
    let run = run_of(&app, &cart, |r| r["status"] == "pending").await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let abandoned_at = chrono::DateTime::parse_from_rfc3339(run["abandoned_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let due = chrono::DateTime::parse_from_rfc3339(run["next_due_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(due - abandoned_at, Duration::minutes(45));

    // Nothing before the first step is due.
    app.clock.advance(Duration::minutes(44));
    app.settle().await;
    assert!(sink.messages().is_empty());
    app.clock.advance(Duration::minutes(1));
    run_of(&app, &cart, |r| r["current_step"] == 1).await;
    let first = sink.messages();
    assert_eq!(first.len(), 1);
    let m = &first[0];
    assert_eq!(m.to, vec!["<ann@example.com>".to_owned()]);
    assert_eq!(
        m.header("Message-ID").unwrap(),
        format!("<{run_id}.s1.a1@shop.test>")
    );
    assert_eq!(m.header("From").unwrap(), "\"Mug Store\" <shop@shop.test>");
    let unsubscribe = m.header("List-Unsubscribe").unwrap();
    assert!(
        unsubscribe.starts_with("<https://ocart.shop.test/u/"),
        "{unsubscribe}"
    );
    assert!(
        unsubscribe.contains("<mailto:shop@shop.test?subject=unsubscribe>"),
        "{unsubscribe}"
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    assert!(m
        .header("Content-Type")
        .unwrap()
        .starts_with("multipart/alternative"));
    assert!(m.data.contains("Content-Type: text/plain"));
    assert!(m.data.contains("Content-Type: text/html"));
    assert!(m.data.contains("https://ocart.shop.test/r/"));

    // 24 hours and 72 hours after abandonment.
    app.clock.set(abandoned_at + Duration::hours(24));
    run_of(&app, &cart, |r| r["current_step"] == 2).await;
    assert_eq!(sink.messages().len(), 2);
    app.clock.set(abandoned_at + Duration::hours(72));
    let done = run_of(&app, &cart, |r| r["status"] == "stopped").await;
    assert_eq!(done["stop_reason"], "completed");
    assert_eq!(done["current_step"], 3);
    let all = sink.messages();
    assert_eq!(all.len(), 3);
    let ids: Vec<String> = all
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=3)
            .map(|s| format!("<{run_id}.s{s}.a1@shop.test>"))
            .collect::<Vec<_>>()
    );
    // Each message has its own restore and unsubscribe links.
    let unsubs: std::collections::BTreeSet<String> = all
        .iter()
        .map(|m| m.header("List-Unsubscribe").unwrap())
        .collect();
    assert_eq!(unsubs.len(), 3);
    // The run shows every message as sent.
    let (_, detail) = app
        .admin_get(&format!("/ocart/v1/recovery/runs/{run_id}"))
        .await;
    let statuses: Vec<&str> = detail["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["sent", "sent", "sent"]);
    let dispatched = events_of(&app, "recovery/dispatched").await;
    assert_eq!(dispatched.len(), 3);
    assert_eq!(dispatched[2]["step"], 3);
    // Nothing more, ever.
    app.clock.advance(Duration::days(10));
    app.settle().await;
    assert_eq!(sink.messages().len(), 3);
}

#[tokio::test]
async fn postgres_three_emails_go_out_over_smtp_on_schedule() {
    three_emails_over_smtp(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_three_emails_go_out_over_smtp_on_schedule() {
    three_emails_over_smtp(Kind::Sqlite).await;
}

/// A failed send is retried 15 × attempt minutes later, under a new message key.
#[tokio::test]
async fn a_failed_send_is_retried_fifteen_minutes_later() {
    let sink = SmtpSink::start().await;
    let m = Manual::start(Kind::Sqlite, |c| sink.configure(c)).await;
    let cart = capture(&m.app, "fay@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    m.app.clock.advance(Duration::minutes(45));
    sink.fail_next.store(1, std::sync::atomic::Ordering::SeqCst);
    let report = m.dispatch().await;
    assert_eq!((report.sent, report.failed), (0, 1));
    let run = m.only_run(&cart).await;
    assert_eq!(run["status"], "pending");
    assert_eq!(run["current_step"], 0);
    let failed = events_of(&m.app, "recovery/failed").await;
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["error"].as_str().unwrap().contains("451"));
    m.app.clock.advance(Duration::minutes(14));
    assert_eq!(m.dispatch().await.sent, 0);
    m.app.clock.advance(Duration::minutes(1));
    assert_eq!(m.dispatch().await.sent, 1);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0]
        .header("Message-ID")
        .unwrap()
        .contains(".s1.a2@"));
    let (_, detail) = m
        .app
        .admin_get(&format!(
            "/ocart/v1/recovery/runs/{}",
            run["run_id"].as_str().unwrap()
        ))
        .await;
    let lifecycle: Vec<(i64, &str)> = detail["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["attempt"].as_i64().unwrap(),
                n["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(lifecycle, vec![(1, "failed"), (2, "sent"), (1, "queued")]);
}
