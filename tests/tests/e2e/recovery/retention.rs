//! Retention: old carts expire, their shoppers are erased, the feed is pruned.

use chrono::Duration;
use ocart_tests::Kind;
use serde_json::json;

use super::{capture, events_of, Manual};

/// Retention: carts past `recovery.cart_retention_days` expire and their shoppers' personal
/// data is erased (unless the shopper has a newer cart); the deliverability feed keeps
/// `recovery.deliverability_days`.
async fn retention(kind: Kind) {
    let m = Manual::start(kind, |_| {}).await;
    let app = &m.app;
    let retention = ocart_processors::Retention::new(
        app.core.log.clone(),
        app.core.vault.clone(),
        app.clock.clone(),
    );
    let ann = capture(app, "ann@example.com").await;
    let bob_old = capture(app, "bob@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 2);
    app.clock.advance(Duration::days(85));
    let bob_new = capture(app, "bob@example.com").await;
    app.clock.advance(Duration::days(6));
    m.project().await;

    let pruned = retention.prune().await.unwrap();
    assert_eq!(pruned.deliverability_rows, 0);
    assert_eq!(pruned.carts_expired, 2, "{pruned:?}");
    // Ann's email; the phone all test carts share stays (Bob's new cart holds it).
    assert_eq!(pruned.subjects_erased, 1, "{pruned:?}");
    m.project().await;
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{ann}")).await;
    assert_eq!(cart["status"], "expired");
    assert_eq!(cart["erased"], true);
    assert!(cart["email"].is_null());
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{bob_old}")).await;
    assert_eq!(cart["status"], "expired");
    assert_eq!(cart["email"], "bob@example.com");
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{bob_new}")).await;
    assert_eq!(cart["status"], "active");
    assert_eq!(events_of(app, "privacy/subject_erased").await.len(), 1);
    // A second pass has nothing to do.
    assert_eq!(retention.prune().await.unwrap(), Default::default());

    // Half a year on: the feed is pruned and Bob's data goes too.
    app.clock.advance(Duration::days(120));
    m.project().await;
    let pruned = retention.prune().await.unwrap();
    assert!(pruned.deliverability_rows >= 2, "{pruned:?}");
    assert_eq!(pruned.carts_expired, 1);
    assert_eq!(pruned.subjects_erased, 2);
    m.project().await;
    let (_, feed) = app.admin_get("/ocart/v1/recovery/deliverability").await;
    assert_eq!(feed["events"], json!([]));
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{bob_new}")).await;
    assert_eq!(cart["erased"], true);
}

#[tokio::test]
async fn postgres_retention_expires_old_carts_erases_their_shoppers_and_prunes_the_feed() {
    retention(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_retention_expires_old_carts_erases_their_shoppers_and_prunes_the_feed() {
    retention(Kind::Sqlite).await;
}
