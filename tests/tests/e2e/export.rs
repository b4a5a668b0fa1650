//! `ocart export` and `ocart import` with the real binary: a store's offers, funnels and
//! sequences exported, imported into a fresh store and exported again give the same document,
//! and the funnel resolves there as it did; a second import changes nothing; a bad document
//! is refused naming the item, and nothing is written; a dry run writes nothing and says what
//! would change.

use ocart_tests::{capture_body, ocart, read, session, spawn_app, Kind, TestApp};
use serde_json::{json, Value};

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "ocart-{name}-{}.json",
        uuid::Uuid::new_v4().simple()
    ))
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let req = app.client.delete(app.url(path)).bearer_auth(&app.admin);
    read(req.send().await.expect("request")).await
}

async fn created(app: &TestApp, path: &str, body: Value) -> String {
    let (status, reply) = app.post(path, Some(&app.admin), &body).await;
    assert_eq!(status, 201, "{path}: {reply}");
    reply["id"]
        .as_str()
        .or(reply["sequence_id"].as_str())
        .unwrap()
        .to_owned()
}

/// In `app`, over HTTP: a bump, an upsell, a downsell, an archived bump, an active default
/// funnel using the first three, a draft funnel, and a recovery sequence (switched off).
async fn furnish(app: &TestApp) {
    let bump = created(
        app,
        "/ocart/v1/bumps",
        json!({"name": "Gift wrap", "currency": "EUR",
               "product": {"product_id": 7, "name": "Gift wrap", "price": 1500, "quantity": 1},
               "pricing": {"type": "fixed_addon", "amount": 300},
               "display": {"headline": "Wrap it", "copy": "Nicely",
                           "image_url": "https://shop.example/wrap.png"}}),
    )
    .await;
    let upsell = created(
        app,
        "/ocart/v1/upsells",
        json!({"name": "Pro mug", "currency": "EUR",
               "product": {"product_id": "sku-pro", "name": "Pro mug", "price": 3000},
               "pricing": {"type": "discount_pct", "value": "15"},
               "targeting": {"all": [{"cart_min_total": 1000}]},
               "page_template": "<h1>{{ offer.name }}</h1>"}),
    )
    .await;
    let downsell = created(
        app,
        "/ocart/v1/upsells",
        json!({"kind": "downsell", "name": "Mini mug", "currency": "EUR",
               "product": {"product_id": 9, "name": "Mini mug"},
               "pricing": {"type": "price", "amount": 900}}),
    )
    .await;
    let old = created(
        app,
        "/ocart/v1/bumps",
        json!({"name": "Old wrap", "currency": "EUR",
               "product": {"product_id": 8, "name": "Old wrap"},
               "pricing": {"type": "percent_addon", "value": "2.5"}}),
    )
    .await;
    let (status, archived) = delete(app, &format!("/ocart/v1/bumps/{old}")).await;
    assert_eq!(status, 200, "{archived}");
    let steps = json!([
        {"key": "checkout", "type": "checkout", "branches": {"default": "bump"}},
        {"key": "bump", "type": "bump", "offer_id": bump, "branches": {"default": "upsell"}},
        {"key": "upsell", "type": "upsell", "offer_id": upsell,
         "branches": {"accepted": "thanks", "declined": "downsell"}},
        {"key": "downsell", "type": "downsell", "offer_id": downsell,
         "branches": {"default": "thanks"}},
        {"key": "thanks", "type": "thank_you"}
    ]);
    created(
        app,
        "/ocart/v1/funnels",
        json!({"id": "main", "name": "Main funnel", "steps": steps,
               "trigger": {"is_default": true, "priority": 3},
               "settings": {"theme": "dark", "layout": "one_step"}}),
    )
    .await;
    let (status, active) = app
        .post(
            "/ocart/v1/funnels/main/activate",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{active}");
    assert_eq!(active["status"], "active");
    created(
        app,
        "/ocart/v1/funnels",
        json!({"id": "later", "name": "Later", "steps": [
            {"key": "checkout", "type": "checkout", "branches": {"default": "thanks"}},
            {"key": "thanks", "type": "thank_you"}]}),
    )
    .await;
    created(
        app,
        "/ocart/v1/recovery/sequences",
        json!({"name": "Winback", "trigger_type": "checkout_abandoned", "active": false,
               "steps": [{"channel": "email", "delay_min": 60, "template": "recovery_email_1"},
                         {"channel": "email", "delay_min": 1440, "template": "recovery_email_2",
                          "discount": {"type": "percent", "amount": 10, "expiry_days": 7}}]}),
    )
    .await;
}

/// `ocart export --out FILE` in `app`: the document's text.
async fn export(app: &TestApp) -> String {
    let path = temp_file("export");
    let (code, out, err) = ocart(&app.db, &["export", "--out", path.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    let text = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    text
}

/// The text with its `exported_at` value blanked, for byte comparisons.
fn without_time(text: &str) -> String {
    let doc: Value = serde_json::from_str(text).unwrap();
    let at = doc["exported_at"].as_str().unwrap();
    text.replace(at, "")
}

fn write_doc(doc: &Value) -> std::path::PathBuf {
    let path = temp_file("import");
    std::fs::write(&path, serde_json::to_string_pretty(doc).unwrap()).unwrap();
    path
}

/// `ocart import FILE --json [extra…]`: exit code, the report (or Null), stderr.
async fn import(app: &TestApp, file: &std::path::Path, extra: &[&str]) -> (i32, Value, String) {
    let mut args = vec!["import", file.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = ocart(&app.db, &args).await;
    (code, serde_json::from_str(&out).unwrap_or(Value::Null), err)
}

async fn head(app: &TestApp) -> i64 {
    app.core.log.stats().await.expect("log stats").1
}

fn counts(report: &Value) -> (u64, u64, u64) {
    (
        report["created"].as_u64().unwrap(),
        report["updated"].as_u64().unwrap(),
        report["unchanged"].as_u64().unwrap(),
    )
}

/// The funnel, steps and bumps a session's cart resolves to, once the funnel is there.
async fn resolved(app: &TestApp, shopper: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (status, body) = read(
            app.client
                .get(app.url(&format!(
                    "/ocart/v1/funnels/resolve?session_token={shopper}"
                )))
                .send()
                .await
                .expect("request"),
        )
        .await;
        if status == 200
            && !body["funnel"].is_null()
            && !body["bumps"].as_array().unwrap().is_empty()
        {
            return body;
        }
        last = body;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the funnel never resolved; last {last}");
}

async fn round_trip(kind: Kind) {
    let a = spawn_app(kind).await;
    furnish(&a).await;
    let first = export(&a).await;
    let doc: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(doc["format"], "ocart-export");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["offers"].as_array().unwrap().len(), 4, "{doc}");
    assert_eq!(doc["funnels"].as_array().unwrap().len(), 2, "{doc}");
    assert_eq!(
        doc["sequences"].as_array().unwrap().len(),
        2,
        "the default sequence and Winback: {doc}"
    );
    let statuses: Vec<&str> = doc["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "archived").count(), 1);
    let main = doc["funnels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "main")
        .unwrap();
    assert_eq!(main["status"], "active");
    assert_eq!(main["steps"].as_array().unwrap().len(), 5);
    assert_eq!(
        without_time(&export(&a).await),
        without_time(&first),
        "two exports of one state differ only in exported_at"
    );

    let b = spawn_app(kind).await;
    let file = write_doc(&doc);
    let (code, report, err) = import(&b, &file, &[]).await;
    assert_eq!(code, 0, "{report}{err}");
    assert_eq!(
        counts(&report),
        (7, 0, 1),
        "all but the default sequence (every store has it) are created: {report}"
    );
    let again = export(&b).await;
    assert_eq!(
        without_time(&again),
        without_time(&first),
        "the export of the store imported into is the same document"
    );

    // The funnel resolves in B as in A, with the same bump.
    let shopper = session();
    for app in [&a, &b] {
        let (status, _) = app
            .capture(&capture_body(&shopper, "ann@example.com", 2))
            .await;
        assert_eq!(status, 202);
        app.settle().await;
    }
    let in_a = resolved(&a, &shopper).await;
    assert_eq!(in_a["funnel"]["id"], "main", "{in_a}");
    assert_eq!(in_a["steps"].as_array().unwrap().len(), 5);
    assert_eq!(resolved(&b, &shopper).await, in_a);

    // The writes were recorded as events with the CLI as the actor (the audit trail).
    let (status, audit) = b.admin_get("/ocart/v1/audit?limit=100").await;
    assert_eq!(status, 200, "{audit}");
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|row| row["object_id"] == "main"
                && row["actor"].as_str().unwrap().starts_with("cli:")),
        "{audit}"
    );
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn postgres_an_export_imports_into_a_fresh_store_as_the_same_thing() {
    round_trip(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_an_export_imports_into_a_fresh_store_as_the_same_thing() {
    round_trip(Kind::Sqlite).await;
}

/// A's export (A stopped, its connections closed), and a fresh B.
async fn exported_and_fresh(kind: Kind) -> (Value, TestApp) {
    let a = spawn_app(kind).await;
    furnish(&a).await;
    let doc: Value = serde_json::from_str(&export(&a).await).unwrap();
    drop(a.stop().await);
    let b = spawn_app(kind).await;
    b.settle().await;
    (doc, b)
}

async fn importing_twice_changes_nothing(kind: Kind) {
    let (doc, b) = exported_and_fresh(kind).await;
    let file = write_doc(&doc);
    let (code, report, err) = import(&b, &file, &[]).await;
    assert_eq!(code, 0, "{report}{err}");
    assert_eq!(counts(&report).0, 7, "{report}");
    b.settle().await;
    let before = head(&b).await;
    let (code, report, err) = import(&b, &file, &[]).await;
    assert_eq!(code, 0, "{report}{err}");
    assert_eq!(counts(&report), (0, 0, 8), "{report}");
    assert!(report["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["action"] == "unchanged" && i["ops"] == json!([])));
    assert_eq!(head(&b).await, before, "the second import wrote nothing");
    // Human output says so too.
    let (code, out, err) = ocart(&b.db, &["import", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 created, 0 updated, 8 unchanged"), "{out}");
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn postgres_importing_a_file_twice_changes_nothing_the_second_time() {
    importing_twice_changes_nothing(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_importing_a_file_twice_changes_nothing_the_second_time() {
    importing_twice_changes_nothing(Kind::Sqlite).await;
}

async fn a_bad_document_writes_nothing(kind: Kind) {
    let (doc, b) = exported_and_fresh(kind).await;
    let before = head(&b).await;

    // A funnel step naming an offer that is nowhere.
    let mut missing = doc.clone();
    let main = missing["funnels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["id"] == "main")
        .unwrap();
    main["steps"][1]["offer_id"] = json!("no-such-offer");
    let file = write_doc(&missing);
    let (code, _, err) = import(&b, &file, &[]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("funnels[") && err.contains("\"main\"") && err.contains("no-such-offer"),
        "{err}"
    );
    assert!(err.contains("nothing was written"), "{err}");
    let _ = std::fs::remove_file(&file);

    // A malformed offer in the middle of the list.
    let mut malformed = doc.clone();
    malformed["offers"][1]["pricing"] = json!({"type": "cheap"});
    let id = malformed["offers"][1]["id"].as_str().unwrap().to_owned();
    let file = write_doc(&malformed);
    let (code, _, err) = import(&b, &file, &[]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("offers[1] \"{id}\": pricing.type")),
        "{err}"
    );
    let _ = std::fs::remove_file(&file);

    // Another version of the format.
    let mut later = doc.clone();
    later["version"] = json!(2);
    let file = write_doc(&later);
    let (code, _, err) = import(&b, &file, &[]).await;
    assert_ne!(code, 0);
    assert!(err.contains("version 2"), "{err}");
    let _ = std::fs::remove_file(&file);

    assert_eq!(head(&b).await, before, "nothing was written");
    let (_, bumps) = b.admin_get("/ocart/v1/bumps?include_archived=true").await;
    assert_eq!(bumps["offers"], json!([]), "{bumps}");
    let (_, funnels) = b.admin_get("/ocart/v1/funnels").await;
    assert_eq!(funnels["funnels"], json!([]), "{funnels}");
}

#[tokio::test]
async fn postgres_a_bad_document_is_refused_naming_the_item_and_writes_nothing() {
    a_bad_document_writes_nothing(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_bad_document_is_refused_naming_the_item_and_writes_nothing() {
    a_bad_document_writes_nothing(Kind::Sqlite).await;
}

async fn a_dry_run_writes_nothing(kind: Kind) {
    let (doc, b) = exported_and_fresh(kind).await;
    let file = write_doc(&doc);
    let before = head(&b).await;
    let (code, report, err) = import(&b, &file, &["--dry-run"]).await;
    assert_eq!(code, 0, "{report}{err}");
    assert_eq!(report["dry_run"], true);
    assert_eq!(counts(&report), (7, 0, 1), "{report}");
    let main = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "funnel" && i["id"] == "main")
        .unwrap();
    assert_eq!(main["ops"], json!(["create"]), "created active: {main}");
    assert_eq!(head(&b).await, before, "a dry run writes nothing");
    let (_, funnels) = b.admin_get("/ocart/v1/funnels").await;
    assert_eq!(funnels["funnels"], json!([]));

    // Imported, then one offer renamed in the file: the dry run names that one update.
    let (code, report, err) = import(&b, &file, &[]).await;
    assert_eq!(code, 0, "{report}{err}");
    b.settle().await;
    let mut renamed = doc.clone();
    let offer = renamed["offers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["status"] == "active")
        .unwrap();
    offer["name"] = json!("Renamed");
    let id = offer["id"].as_str().unwrap().to_owned();
    let file = write_doc(&renamed);
    let before = head(&b).await;
    let (code, report, err) = import(&b, &file, &["--dry-run"]).await;
    assert_eq!(code, 0, "{report}{err}");
    assert_eq!(counts(&report), (0, 1, 7), "{report}");
    let changed: Vec<&Value> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["action"] != "unchanged")
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["id"], id.as_str());
    assert_eq!(changed[0]["ops"], json!(["update"]));
    assert_eq!(head(&b).await, before, "a dry run writes nothing");
    // And for real: the offer is renamed.
    let (code, report, err) = import(&b, &file, &[]).await;
    assert_eq!(code, 0, "{report}{err}");
    assert_eq!(counts(&report), (0, 1, 7), "{report}");
    assert!(head(&b).await > before);
    let (_, all) = b.admin_get("/ocart/v1/bumps?include_archived=true").await;
    let (_, ups) = b.admin_get("/ocart/v1/upsells").await;
    let names: Vec<String> = all["offers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(ups["offers"].as_array().unwrap())
        .filter(|o| o["id"] == id.as_str())
        .map(|o| o["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["Renamed"]);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test]
async fn postgres_a_dry_run_writes_nothing_and_reports_what_would_change() {
    a_dry_run_writes_nothing(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_dry_run_writes_nothing_and_reports_what_would_change() {
    a_dry_run_writes_nothing(Kind::Sqlite).await;
}
