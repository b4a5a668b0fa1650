//! Templates: previews, saved templates checked at save and used at send.

use chrono::Duration;
use ocart_tests::{outbox_emails, spawn_app, Kind, TestApp};
use serde_json::{json, Value};

use super::{capture, header, Manual};

/// A template preview renders with a sample cart; unknown tags are refused by part.
#[tokio::test]
async fn templates_preview_and_unknown_tags_are_refused() {
    let app = spawn_app(Kind::Sqlite).await;
    let (status, body) = app
        .post(
            "/ocart/v1/recovery/templates/recovery_email_3/preview",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["rendered"]["html"]
        .as_str()
        .unwrap()
        .contains("OCART-SAMPLE1"));
    assert!(body["rendered"]["subject"].as_str().unwrap().len() > 5);
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/templates/custom/preview",
            Some(&app.admin),
            &json!({"template": {"subject": "Hi {{ firstname }}", "html": "<p>{{ restore_url }}</p>", "text": "{{ restore_url }}"}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "template.subject");
    assert!(problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("firstname"));
}

async fn put_template(app: &TestApp, id: &str, body: &Value) -> (u16, Value) {
    let resp = app
        .client
        .put(app.url(&format!("/ocart/v1/recovery/templates/{id}")))
        .bearer_auth(&app.admin)
        .json(body)
        .send()
        .await
        .unwrap();
    ocart_tests::read(resp).await
}

/// A template saved under a step's name is what that step sends; unknown merge tags are
/// refused when the template is saved, naming the part; deleting it brings the built-in back.
#[tokio::test]
async fn saved_templates_are_checked_at_save_and_used_at_send() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    let (status, problem) = put_template(
        app,
        "recovery_email_1",
        &json!({"subject": "Hi {{ first_name }}", "html": "<p>{{ restore_url }}</p>",
                "text": "{{ restore_url }} {{ discount }}"}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["subject", "text"]);
    assert!(problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("first_name"));
    let (status, problem) = put_template(
        app,
        "Bad Name",
        &json!({"subject": "x", "html": "", "text": ""}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");

    let custom = json!({
        "subject": "{{ store_name }} kept your cart, {{ customer_first_name }}",
        "preheader": "Back in one click",
        "html": "<html><body><span>{{ preheader }}</span><p>Total {{ cart_total }}</p><a href=\"{{ restore_url }}\">Back</a></body></html>",
        "text": "Total {{ cart_total }}: {{ restore_url }}"
    });
    let (status, saved) = put_template(app, "recovery_email_1", &custom).await;
    assert_eq!(status, 200, "{saved}");
    m.project().await;
    let (_, list) = app.admin_get("/ocart/v1/recovery/templates").await;
    let first = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["template_id"] == "recovery_email_1")
        .unwrap()
        .clone();
    assert_eq!(first["source"], "saved");
    assert!(list["merge_tags"]
        .as_array()
        .unwrap()
        .contains(&json!("coupon_code")));
    let (_, preview) = app
        .post(
            "/ocart/v1/recovery/templates/recovery_email_1/preview",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert!(preview["rendered"]["html"]
        .as_str()
        .unwrap()
        .contains("<span>Back in one click</span>"));

    capture(app, "ann@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    let eml = &outbox_emails(app)[0].1;
    assert!(
        header(eml, "Subject")
            .unwrap()
            .contains("Mug Store kept your cart, Ann"),
        "{eml}"
    );

    let resp = app
        .client
        .delete(app.url("/ocart/v1/recovery/templates/recovery_email_1"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    m.project().await;
    let (_, shown) = app
        .admin_get("/ocart/v1/recovery/templates/recovery_email_1")
        .await;
    assert_eq!(shown["source"], "builtin");
    let resp = app
        .client
        .delete(app.url("/ocart/v1/recovery/templates/recovery_email_1"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
