//! Auth, settings, the audit log, OpenAPI, info, metrics and the domain's no-IO rule.

use ocart_tests::{capture_body, session, spawn_app, Kind};
use serde_json::json;

#[tokio::test]
async fn tokens_are_checked_for_presence_capability_and_revocation() {
    let app = spawn_app(Kind::Postgres).await;
    let resp = app
        .client
        .get(app.url("/ocart/v1/carts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let (status, _) = app.get("/ocart/v1/carts", "ocart_not-a-real-token").await;
    assert_eq!(status, 401);

    let (id, reports) = app.token_with(&["ocart_view_reports"]).await;
    let (status, body) = app.get("/ocart/v1/carts", &reports).await;
    assert_eq!(status, 200, "{body}");
    let (status, problem) = app.get("/ocart/v1/settings", &reports).await;
    assert_eq!(status, 403);
    assert!(problem["detail"].as_str().unwrap().contains("ocart_manage"));

    let resp = app
        .client
        .delete(app.url(&format!("/ocart/v1/tokens/{id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _) = app.get("/ocart/v1/carts", &reports).await;
    assert_eq!(status, 401, "a revoked token is refused at once");

    // Only hashes are stored.
    let ocart_projections::Db::Pg(pool) = &app.core.db else {
        unreachable!()
    };
    let (count,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM events WHERE payload::text LIKE '%' || $1 || '%'")
            .bind(&reports)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(count, 0, "a token secret is never stored");
}

#[tokio::test]
async fn settings_follow_the_reference_and_changes_are_validated_and_audited() {
    let app = spawn_app(Kind::Sqlite).await;
    let (status, body) = app.admin_get("/ocart/v1/settings").await;
    assert_eq!(status, 200);
    let s = &body["settings"];
    assert_eq!(s["general"]["enabled"], true);
    assert_eq!(s["recovery"]["consent_required"], true);
    assert_eq!(s["recovery"]["abandoned_threshold_min"], 30);
    assert_eq!(s["recovery"]["cart_retention_days"], 90);
    assert_eq!(s["recovery"]["deliverability_days"], 180);
    assert_eq!(s["upsells"]["one_click_token_ttl_min"], 30);
    assert_eq!(s["tests"]["method_default"], "bayesian");

    for (patch, field) in [
        (
            json!({"recovery": {"abandoned_threshold_min": 4}}),
            "recovery.abandoned_threshold_min",
        ),
        (
            json!({"recovery": {"abandoned_threshold_min": 1441}}),
            "recovery.abandoned_threshold_min",
        ),
        (
            json!({"recovery": {"no_such_key": 1}}),
            "recovery.no_such_key",
        ),
        (json!({"nope": {}}), "nope"),
        (
            json!({"general": {"log_level": "loud"}}),
            "general.log_level",
        ),
        (
            json!({"recovery": {"consent_required": "yes"}}),
            "recovery.consent_required",
        ),
    ] {
        let resp = app
            .client
            .patch(app.url("/ocart/v1/settings"))
            .bearer_auth(&app.admin)
            .json(&patch)
            .send()
            .await
            .unwrap();
        let (status, problem) = ocart_tests::read(resp).await;
        assert_eq!(status, 422, "{patch}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&json!({"recovery": {"abandoned_threshold_min": 45}}))
        .send()
        .await
        .unwrap();
    let (status, body) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], json!(["recovery.abandoned_threshold_min"]));
    let (_, body) = app.admin_get("/ocart/v1/settings").await;
    assert_eq!(body["settings"]["recovery"]["abandoned_threshold_min"], 45);
    let audit = app
        .eventually("/ocart/v1/audit", |rows| {
            rows.as_array()
                .is_some_and(|r| r.iter().any(|row| row["action"] == "settings/changed"))
        })
        .await;
    let row = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "settings/changed")
        .unwrap();
    assert!(row["actor"].as_str().unwrap().starts_with("token:"));
    assert_eq!(
        row["diff"]["changes"][0],
        json!({"key": "recovery.abandoned_threshold_min", "old": 30, "new": 45})
    );
    assert_eq!(row["ip"], "127.0.0.1");
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let app = spawn_app(Kind::Sqlite).await;
    let resp = app
        .client
        .get(app.url("/ocart/v1/openapi"))
        .send()
        .await
        .unwrap();
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    // Every operation has an id, and no two share one (validators and client generators
    // refuse duplicates).
    let mut ids = std::collections::BTreeMap::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let id = operation["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            if let Some(other) = ids.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId {id} names both {other} and {method} {path}");
            }
        }
    }
    // The document is made from the routers (utoipa-axum's `routes!` routes and documents a
    // handler in one step), so what is served is documented; these must be among it.
    for (path, method) in [
        ("/ocart/v1/checkout/capture", "post"),
        ("/ocart/v1/carts", "get"),
        ("/ocart/v1/carts/{id}", "get"),
        ("/ocart/v1/carts/{id}/abandon", "post"),
        ("/ocart/v1/carts/{id}/convert", "post"),
        ("/ocart/v1/settings", "get"),
        ("/ocart/v1/settings", "patch"),
        ("/ocart/v1/tokens", "get"),
        ("/ocart/v1/tokens", "post"),
        ("/ocart/v1/tokens/{id}", "delete"),
        ("/ocart/v1/privacy/erase", "post"),
        ("/ocart/v1/audit", "get"),
        ("/ocart/v1/ping", "get"),
        ("/ocart/v1/info", "get"),
        ("/ocart/v1/openapi", "get"),
        ("/metrics", "get"),
        ("/ocart/v1/orders", "post"),
        ("/ocart/v1/orders", "get"),
        ("/ocart/v1/webhooks/woocommerce", "post"),
        ("/ocart/v1/webhooks/deliverability", "post"),
        ("/r/{token}", "get"),
        ("/o/{token}", "get"),
        ("/u/{token}", "get"),
        ("/u/{token}", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from OpenAPI"
        );
    }
    // Every documented operation is routed (anything but the 404 fallback), declares the
    // errors it can answer as problem documents, and its authentication errors if it has any.
    let mut operations = 0;
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            operations += 1;
            let url = app.url(
                &path
                    .replace("{id}", "x")
                    .replace("{token}", "not-a-link-of-ours-at-all"),
            );
            let resp = app
                .client
                .request(method.to_uppercase().parse().unwrap(), url)
                .bearer_auth(&app.admin)
                .send()
                .await
                .unwrap();
            let body = resp.text().await.unwrap();
            assert!(
                !body.contains("route /"),
                "{method} {path} is documented but not routed: {body}"
            );
            let responses = operation["responses"].as_object().unwrap();
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let content = response["content"]
                        .as_object()
                        .unwrap_or_else(|| panic!("{method} {path} {status} declares no content"));
                    assert!(
                        content.contains_key("application/problem+json")
                            || content.contains_key("text/html"),
                        "{method} {path} {status} is not a problem document: {content:?}"
                    );
                }
            }
            if operation.get("security").is_some() {
                for status in ["401", "403"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} is authenticated but does not document {status}"
                    );
                }
            }
            if operation.get("requestBody").is_some() {
                for status in ["400", "413", "422"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} takes a body but does not document {status}"
                    );
                }
            }
        }
    }
    assert!(operations >= 45, "{operations} operations documented");
    // And no route can be added beside the documenting routers: no module registers a handler
    // with axum's plain `route` (or a service, or a plain axum Router).
    let api = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/src");
    let mut sources = vec![api.join("app.rs")];
    for entry in std::fs::read_dir(api.join("routes")).unwrap() {
        sources.push(entry.unwrap().path());
    }
    for source in sources {
        let text = std::fs::read_to_string(&source).unwrap();
        for forbidden in [
            ".route(",
            ".route_service(",
            ".nest_service(",
            " Router::new()",
            "(Router::new()",
            "OpenApiRouter::from(",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} registers a route outside the documenting routers ({forbidden})",
                source.display()
            );
        }
    }
}

#[tokio::test]
async fn info_and_metrics_report_the_system() {
    let app = spawn_app(Kind::Postgres).await;
    app.capture(&capture_body(&session(), "m@example.com", 1))
        .await;
    let info = app
        .eventually("/ocart/v1/info", |i| {
            i["projections"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["lag"] == 0)
        })
        .await;
    assert_eq!(info["backend"], "postgres");
    assert_eq!(info["nats"], false);
    assert!(info["events"].as_i64().unwrap() >= 2);
    let names: Vec<&str> = info["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in ["carts", "api_tokens", "settings", "audit_log"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    // Every background processor runs under the supervisor and reports its state.
    let info = app
        .eventually("/ocart/v1/info", |i| {
            i["processors"].as_array().is_some_and(|ps| {
                ps.len() == 11
                    && ps
                        .iter()
                        .all(|p| p["state"] == "running" && p["steps"].as_u64() > Some(0))
            })
        })
        .await;
    let processors: Vec<&str> = info["processors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        processors,
        [
            "abtest_concluder",
            "abtest_conversions",
            "abtest_retention",
            "dispatcher",
            "privacy_eraser",
            "projections",
            "recovery_followups",
            "recovery_opener",
            "retention",
            "sweeper",
            "upsell_charger"
        ]
    );
    for p in info["processors"].as_array().unwrap() {
        assert_eq!(p["panics"], 0, "{p}");
        assert_eq!(p["restarts"], 0, "{p}");
        assert_eq!(p["last_error"], serde_json::Value::Null, "{p}");
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("ocart_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/ocart/v1/checkout/capture\""));
    assert!(text.contains("ocart_http_request_duration_seconds"));
    assert!(text.contains("ocart_events_appended_total"));
    assert!(text.contains("ocart_projection_lag_events"));
}

#[test]
fn the_domain_crate_does_no_io() {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "tree",
            "--offline",
            "-q",
            "--manifest-path",
            manifest,
            "-p",
            "ocart-domain",
            "-e",
            "normal,features",
            "--prefix",
            "none",
        ])
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    for forbidden in ["sqlx", "axum", "async-nats", "reqwest", "hyper ", "mio "] {
        assert!(
            !tree.lines().any(|l| l.starts_with(forbidden)),
            "ocart-domain depends on {forbidden}"
        );
    }
    for feature in [
        "tokio feature \"net\"",
        "tokio feature \"fs\"",
        "tokio feature \"full\"",
    ] {
        assert!(!tree.contains(feature), "ocart-domain enables {feature}");
    }
    assert!(tree.contains("cqrs-es"), "the tree was read");
}

/// The embedded database's write-ahead log stays bounded even when reads overlap without a
/// pause (as the projections, the sweeper and the opener do during a burst): once the writes
/// stop, the log is emptied although readers keep reading. Before the bound, a sweep of
/// 1,000,000 carts grew it to 60 GB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_write_ahead_log_stays_bounded_under_overlapping_readers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    let dir = std::env::temp_dir().join(format!("ocart-wal-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("wal.db").display());
    let db = ocart_projections::Db::connect(&url, 8).await.unwrap();
    let ocart_projections::Db::Lite(pool) = &db else {
        unreachable!()
    };
    sqlx::query("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    let page = vec![7u8; 64 * 1024];
    for id in 0..64i64 {
        sqlx::query("INSERT INTO blobs (id, data) VALUES (?, ?)")
            .bind(id)
            .bind(&page)
            .execute(pool)
            .await
            .unwrap();
    }
    // Two readers, each holding a read transaction for 40 ms and starting the next at once,
    // offset by half that: at every moment at least one snapshot is open.
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for offset in [0u64, 20] {
        let (pool, stop) = (pool.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(offset)).await;
            while !stop.load(Ordering::Relaxed) {
                let mut tx = pool.begin().await.unwrap();
                let _: (i64,) = sqlx::query_as("SELECT count(*) FROM blobs")
                    .fetch_one(&mut *tx)
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(40)).await;
                tx.commit().await.unwrap();
            }
        }));
    }
    // 192 MiB of writes: three times the log's bound of 64 MiB. (Each write changes the
    // blob: SQLite does not write a page whose content stays the same.)
    let wal = dir.join("wal.db-wal");
    for round in 0..3072i64 {
        sqlx::query("UPDATE blobs SET data = ? WHERE id = ?")
            .bind(vec![(round % 251) as u8; 64 * 1024])
            .bind(round % 64)
            .execute(pool)
            .await
            .unwrap();
    }
    let bound = 64 * 1024 * 1024;
    let mut size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    for _ in 0..200 {
        if size <= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.await.unwrap();
    }
    db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        size <= bound,
        "the write-ahead log is {size} bytes with readers still reading; its bound is {bound}"
    );
}

/// Shoppers' emails, phones and names are masked for a token without
/// `ocart_view_personal_data`, in lists and single reads; `ocart_manage` implies it.
#[tokio::test]
async fn personal_data_needs_its_own_capability() {
    let app = spawn_app(Kind::Sqlite).await;
    let (status, reply) = app
        .capture(&capture_body(&session(), "ann@example.com", 1))
        .await;
    assert_eq!(status, 202, "{reply}");
    let cart = reply["cart_id"].as_str().unwrap().to_owned();
    let position = reply["position"].as_i64().unwrap();
    let (_, reports) = app.token_with(&["ocart_view_reports"]).await;
    let (_, personal) = app
        .token_with(&["ocart_view_reports", "ocart_view_personal_data"])
        .await;
    let read = |token: String, path: String| {
        let app = &app;
        async move {
            let resp = app
                .client
                .get(app.url(&path))
                .bearer_auth(token)
                .header("OCart-Position", position.to_string())
                .send()
                .await
                .unwrap();
            ocart_tests::read(resp).await
        }
    };
    let show = format!("/ocart/v1/carts/{cart}");
    let list = "/ocart/v1/carts".to_owned();

    let (status, masked) = read(reports.clone(), show.clone()).await;
    assert_eq!(status, 200, "{masked}");
    assert_eq!(masked["email"], "a***@example.com");
    assert_eq!(masked["phone"], "+1******0123");
    assert_eq!(masked["name"], "A***");
    let (_, page) = read(reports.clone(), list.clone()).await;
    assert_eq!(page["carts"][0]["email"], "a***@example.com");
    assert_eq!(page["carts"][0]["phone"], "+1******0123");
    let text = page.to_string();
    assert!(
        !text.contains("ann@example.com") && !text.contains("4155550123"),
        "{text}"
    );

    for token in [personal.clone(), app.admin.clone()] {
        let (status, clear) = read(token.clone(), show.clone()).await;
        assert_eq!(status, 200, "{clear}");
        assert_eq!(clear["email"], "ann@example.com");
        assert_eq!(clear["phone"], "+14155550123");
        assert_eq!(clear["name"], "Ann Example");
        let (_, page) = read(token, list.clone()).await;
        assert_eq!(page["carts"][0]["email"], "ann@example.com");
    }
    // The personal-data capability alone does not open the reads.
    let (_, only_personal) = app.token_with(&["ocart_view_personal_data"]).await;
    let (status, _) = read(only_personal, show).await;
    assert_eq!(status, 403);
}

/// What axum itself refuses (query and path values that do not parse, a wrong content type,
/// a body over the limit, a wrong method) is a problem document like every other error.
#[tokio::test]
async fn every_refusal_is_a_problem_document() {
    let app = spawn_app(Kind::Sqlite).await;
    let problem = |resp: reqwest::Response| async move {
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{resp:?}"
        );
        ocart_tests::read(resp).await
    };

    // A query value that does not parse names its parameter.
    let resp = app
        .client
        .get(app.url("/ocart/v1/carts?limit=abc"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "limit", "{body}");
    let resp = app
        .client
        .get(app.url("/ocart/v1/recovery/runs?limit=-x"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "limit", "{body}");

    // A path id that is not text once decoded names the parameter.
    let resp = app
        .client
        .get(app.url("/ocart/v1/carts/%FF%FE"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["field"], "id", "{body}");

    // A wrong content type.
    let resp = app
        .client
        .post(app.url("/ocart/v1/checkout/capture"))
        .header("content-type", "application/xml")
        .body("<cart/>")
        .send()
        .await
        .unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!(status, 415, "{body}");
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .contains("application/json"));

    // A body over the limit on a route that reads raw bytes.
    let resp = app
        .client
        .post(app.url("/ocart/v1/recovery/suppression"))
        .bearer_auth(&app.admin)
        .header("content-type", "application/json")
        .body(format!("{{\"recipient\": \"{}\"}}", "x".repeat(70 * 1024)))
        .send()
        .await
        .unwrap();
    let (status, body) = problem(resp).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["status"], 413);

    // A method the route does not have keeps its Allow header.
    let resp = app
        .client
        .delete(app.url("/ocart/v1/checkout/capture"))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("allow"));
    let (status, body) = problem(resp).await;
    assert_eq!(status, 405, "{body}");
}
