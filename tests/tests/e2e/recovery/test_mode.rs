//! Test mode's trigger.

use chrono::Duration;
use ocart_tests::{outbox_emails, spawn_app, Kind};
use serde_json::json;

use super::{run_of, wait_for_emails};

/// Test mode: the trigger makes a dummy abandoned cart whose first email goes out about 30
/// seconds later; without test mode it is refused.
#[tokio::test]
async fn the_test_mode_trigger_mails_a_dummy_cart_within_thirty_seconds() {
    let app = spawn_app(Kind::Sqlite).await;
    let trigger = json!({"email": "owner@shop.test"});
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/test/trigger",
            Some(&app.admin),
            &trigger,
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("test_mode"));
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&json!({"recovery": {"test_mode": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, flow) = app
        .post(
            "/ocart/v1/recovery/test/trigger",
            Some(&app.admin),
            &trigger,
        )
        .await;
    assert_eq!(status, 201, "{flow}");
    let cart = flow["cart_id"].as_str().unwrap().to_owned();
    run_of(&app, &cart, |r| r["status"] == "pending").await;
    app.settle().await;
    assert!(outbox_emails(&app).is_empty());
    app.clock.advance(Duration::seconds(30));
    let emails = wait_for_emails(&app, 1).await;
    assert_eq!(emails.len(), 1);
    assert!(emails[0].1.contains("owner@shop.test"));
    assert_eq!(
        run_of(&app, &cart, |r| r["current_step"] == 1).await["status"],
        "pending"
    );
    let (status, _) = app
        .post(
            "/ocart/v1/recovery/test/trigger",
            Some(&app.admin),
            &json!({"email": "nope"}),
        )
        .await;
    assert_eq!(status, 422);
}
