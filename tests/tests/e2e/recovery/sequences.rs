//! Recovery sequences through the API: the default, edits, normalisation.

use ocart_tests::{spawn_app, Kind};
use serde_json::json;

use super::events_of;

async fn sequence_api(kind: Kind) {
    let app = spawn_app(kind).await;
    // A fresh install has the default sequence: 45 minutes, 24 hours, 72 hours, coupon on 3.
    let list = app
        .eventually("/ocart/v1/recovery/sequences", |b| {
            b["sequences"].as_array().is_some_and(|s| s.len() == 1)
        })
        .await;
    let default = &list["sequences"][0];
    assert_eq!(default["sequence_id"], "default");
    assert_eq!(default["trigger_type"], "cart_abandoned");
    assert_eq!(default["active"], true);
    let delays: Vec<i64> = default["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["delay_min"].as_i64().unwrap())
        .collect();
    assert_eq!(delays, vec![45, 1440, 4320]);
    let coupons: Vec<bool> = default["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["coupon"].as_bool().unwrap())
        .collect();
    assert_eq!(coupons, vec![false, false, true]);

    // Created with steps out of order: saved normalised, and the saved value is returned.
    let (status, created) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "Checkout", "trigger_type": "checkout_abandoned", "steps": [
                {"channel": "email", "delay_min": 5, "template": "recovery_email_1"},
                {"channel": "sms", "delay_min": 10, "template": "sms_1"},
                {"channel": "email", "delay_min": 99999, "template": "recovery_email_3", "coupon": true}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["sequence_id"].as_str().unwrap().to_owned();
    let delays: Vec<i64> = created["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["delay_min"].as_i64().unwrap())
        .collect();
    assert_eq!(delays, vec![15, 30, 10080]);
    let shown = app
        .eventually(&format!("/ocart/v1/recovery/sequences/{id}"), |b| {
            b["name"] == "Checkout"
        })
        .await;
    assert_eq!(shown["steps"][1]["channel"], "sms");

    // Malformed sequences are refused with every field named, and nothing is written.
    let before = events_of(&app, "recovery/sequence_created").await.len();
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": " ", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "email", "delay_min": -3, "template": ""}
            ]}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"name"), "{problem}");
    assert!(fields.contains(&"steps[0].template"), "{problem}");
    assert!(fields.contains(&"steps[0].delay_min"), "{problem}");
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "x", "trigger_type": "on_tuesdays", "steps": []}),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("trigger_type")
            || problem.to_string().contains("on_tuesdays"),
        "{problem}"
    );
    let (status, _) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "x", "trigger_type": "cart_abandoned", "steps": [], "discount": 5}),
        )
        .await;
    assert!(status == 400 || status == 422);
    assert_eq!(
        events_of(&app, "recovery/sequence_created").await.len(),
        before
    );

    // PATCH changes what is given; DELETE archives.
    let resp = app
        .client
        .patch(app.url(&format!("/ocart/v1/recovery/sequences/{id}")))
        .bearer_auth(&app.admin)
        .json(&json!({"name": "Checkout rescue", "active": false}))
        .send()
        .await
        .unwrap();
    let (status, patched) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Checkout rescue");
    assert_eq!(patched["active"], false);
    assert_eq!(patched["steps"].as_array().unwrap().len(), 3);
    let resp = app
        .client
        .delete(app.url(&format!("/ocart/v1/recovery/sequences/{id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let (status, archived) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["archived"], true);
    app.eventually("/ocart/v1/recovery/sequences", |b| {
        b["sequences"].as_array().is_some_and(|s| s.len() == 1)
    })
    .await;
    let all = app
        .eventually("/ocart/v1/recovery/sequences?include_archived=true", |b| {
            b["sequences"].as_array().is_some_and(|s| s.len() == 2)
        })
        .await;
    let archived_row = all["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sequence_id"] == id.as_str())
        .unwrap();
    assert_eq!(archived_row["archived"], true);
    // A deleted (archived) sequence is gone from reads of it (the list above still shows it
    // when asked to include archived ones).
    let (status, _) = app
        .admin_get(&format!("/ocart/v1/recovery/sequences/{id}"))
        .await;
    assert_eq!(status, 404, "an archived sequence is not found");
    let (status, _) = app.admin_get("/ocart/v1/recovery/sequences/nope").await;
    assert_eq!(status, 404);

    // Reports readers read; only recovery managers write.
    let (_, reader) = app.token_with(&["ocart_view_reports"]).await;
    let (status, _) = app.get("/ocart/v1/recovery/sequences", &reader).await;
    assert_eq!(status, 200);
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&reader),
            &json!({"name": "x", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "email", "delay_min": 60, "template": "recovery_email_1"}]}),
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    let (_, manager) = app.token_with(&["ocart_manage_recovery"]).await;
    let (status, _) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&manager),
            &json!({"name": "x", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "email", "delay_min": 60, "template": "recovery_email_1"}]}),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn postgres_sequences_are_managed_and_normalised() {
    sequence_api(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_sequences_are_managed_and_normalised() {
    sequence_api(Kind::Sqlite).await;
}
