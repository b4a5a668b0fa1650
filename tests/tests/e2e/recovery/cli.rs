//! `ocart recovery …` against a server's database.

use chrono::Duration;
use ocart_tests::{outbox_emails, Kind};
use serde_json::{json, Value};

use super::{capture, Manual};

/// `ocart recovery …` against a server's database: sequences, a dry run that explains each
/// due run, a real dispatch pass, the runs and the outbox.
#[tokio::test]
async fn the_recovery_cli_lists_dispatches_and_shows_the_outbox() {
    let m = Manual::start(Kind::Sqlite, |c| c.recovery.outbox_dir = None).await;
    let app = &m.app;
    let (code, out, err) = ocart_tests::ocart(&app.db, &["recovery", "sequence", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("default"), "{out}");
    assert!(out.contains("email +45m recovery_email_1"), "{out}");
    assert!(out.contains("+4320m recovery_email_3 (coupon)"), "{out}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &[
            "recovery",
            "sequence",
            "create",
            "--name",
            "Bad",
            "--steps",
            r#"[{"channel":"email","delay_min":-1,"template":""}]"#,
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("steps[0].template"), "{err}");
    assert!(err.contains("steps[0].delay_min"), "{err}");

    // Two carts of one shopper, abandoned two hours ago (the CLI runs on the wall clock).
    app.clock.set(chrono::Utc::now() - Duration::hours(2));
    let first = capture(app, "ann@example.com").await;
    let second = capture(app, "ann@example.com").await;
    for cart in [&first, &second] {
        // Processors are off: project before each authenticated request.
        m.project().await;
        let (status, body) = app
            .post(
                &format!("/ocart/v1/carts/{cart}/abandon"),
                Some(&app.admin),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    m.settle().await;
    let (code, out, err) =
        ocart_tests::ocart(&app.db, &["recovery", "dispatch", "--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let planned: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = planned
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 2, "{out}");
    assert!(
        actions.contains(&"send") && actions.contains(&"stop"),
        "{out}"
    );
    let stop = planned
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["action"] == "stop")
        .unwrap();
    assert_eq!(stop["reason"], "quiet_period");
    assert!(outbox_emails(app).is_empty(), "a dry run sends nothing");

    let (code, out, err) = ocart_tests::ocart(&app.db, &["recovery", "dispatch"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sent 1,"), "{out}");
    assert!(out.contains("stopped 1,"), "{out}");
    let (code, out, _) = ocart_tests::ocart(&app.db, &["recovery", "outbox"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("email"), "{out}");
    assert!(out.contains("ann@example.com"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let (code, out, _) =
        ocart_tests::ocart(&app.db, &["recovery", "runs", "--status", "stopped"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("stopped (quiet_period)"), "{out}");

    // The suppression list: add stops the shopper's open run; remove allows them again.
    let (code, out, err) = ocart_tests::ocart(
        &app.db,
        &[
            "recovery",
            "suppression",
            "add",
            "Ann@Example.com",
            "--reason",
            "complaint",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("suppressed "), "{out}");
    let (code, out, _) =
        ocart_tests::ocart(&app.db, &["recovery", "runs", "--status", "pending"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "no recovery runs", "{out}");
    let (code, out, _) = ocart_tests::ocart(&app.db, &["recovery", "suppression", "list"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("complaint"), "{out}");
    assert!(!out.contains("ann@example.com"), "{out}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &[
            "recovery",
            "suppression",
            "add",
            "nobody",
            "--reason",
            "manual",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("not an email address"), "{err}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &["recovery", "suppression", "remove", "ann@example.com"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &["recovery", "suppression", "remove", "ann@example.com"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("is not suppressed"), "{err}");
}
