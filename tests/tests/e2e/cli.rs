//! The `ocart` command line against the same store a server uses.

use ocart_projections::Db;
use ocart_tests::{capture_body, ocart, session, spawn_app, Kind};
use serde_json::Value;

async fn a_token_created_by_the_cli_works_on_the_running_server(kind: Kind) {
    let app = spawn_app(kind).await;
    let (code, out, err) = ocart(
        &app.db,
        &[
            "token",
            "create",
            "--name",
            "reports",
            "--cap",
            "ocart_view_reports",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ocart_"));
    let mut ok = false;
    for _ in 0..50 {
        let (status, _) = app.get("/ocart/v1/carts", &token).await;
        if status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(ok, "the server accepts the CLI's token");
    let (code, out, _) = ocart(&app.db, &["token", "list", "--json"]).await;
    assert_eq!(code, 0);
    assert!(!out.contains(&token), "the secret is never listed");
    let (code, _, err) = ocart(
        &app.db,
        &[
            "token",
            "create",
            "--name",
            "x",
            "--cap",
            "ocart_everything",
        ],
    )
    .await;
    assert_ne!(code, 0);
    assert!(err.contains("not a capability"), "{err}");
}

#[tokio::test]
async fn postgres_a_token_created_by_the_cli_works_on_the_running_server() {
    a_token_created_by_the_cli_works_on_the_running_server(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_token_created_by_the_cli_works_on_the_running_server() {
    a_token_created_by_the_cli_works_on_the_running_server(Kind::Sqlite).await;
}

async fn audit_verify_reports_a_tampered_event(kind: Kind) {
    let app = spawn_app(kind).await;
    let s = session();
    app.capture(&capture_body(&s, "t1@example.com", 1)).await;
    let (_, reply) = app.capture(&capture_body(&s, "t1@example.com", 2)).await;
    let cart_id = reply["cart_id"].as_str().unwrap().to_owned();
    let (code, out, err) = ocart(&app.db, &["audit", "verify", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["events"].as_u64().unwrap() >= 2);
    assert_eq!(report["broken"], serde_json::json!([]));
    // Tamper with the first capture's totals, as someone with database access might.
    match &app.core.db {
        Db::Pg(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("SET session_replication_role = replica")
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query("UPDATE events SET payload = jsonb_set(payload, '{totals,total}', '1') WHERE aggregate_id = $1 AND sequence = 1")
                .bind(&cart_id)
                .execute(&mut *conn)
                .await
                .unwrap();
            sqlx::query("SET session_replication_role = origin")
                .execute(&mut *conn)
                .await
                .unwrap();
        }
        Db::Lite(pool) => {
            sqlx::query("DROP TRIGGER events_no_update")
                .execute(pool)
                .await
                .unwrap();
            sqlx::query("UPDATE events SET payload = json_set(payload, '$.totals.total', 1) WHERE aggregate_id = ?1 AND sequence = 1")
                .bind(&cart_id)
                .execute(pool)
                .await
                .unwrap();
        }
    }
    let (code, out, _) = ocart(&app.db, &["audit", "verify", "--json"]).await;
    assert_eq!(code, 1, "a broken chain fails the command: {out}");
    let report: Value = serde_json::from_str(&out).unwrap();
    let broken = report["broken"].as_array().unwrap();
    assert_eq!(broken.len(), 1, "{report}");
    assert_eq!(broken[0]["aggregate_id"], cart_id.as_str());
    assert_eq!(broken[0]["sequence"], 1);
    let (code, out, _) = ocart(&app.db, &["audit", "verify"]).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("do not verify") && out.contains(&cart_id),
        "{out}"
    );
}

#[tokio::test]
async fn postgres_audit_verify_reports_a_tampered_event() {
    audit_verify_reports_a_tampered_event(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_audit_verify_reports_a_tampered_event() {
    audit_verify_reports_a_tampered_event(Kind::Sqlite).await;
}

#[tokio::test]
async fn carts_settings_and_events_from_the_cli() {
    let app = spawn_app(Kind::Postgres).await;
    let (_, reply) = app
        .capture(&capture_body(&session(), "cli@example.com", 1))
        .await;
    let id = reply["cart_id"].as_str().unwrap().to_owned();
    app.eventually(&format!("/ocart/v1/carts/{id}"), |c| {
        c["status"] == "active"
    })
    .await;
    let (code, out, err) = ocart(
        &app.db,
        &[
            "cart",
            "list",
            "--status",
            "active",
            "--since",
            "2026-01-01T00:00:00Z",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["cart_id"], id.as_str());
    let (code, out, _) = ocart(&app.db, &["cart", "list", "--status", "active"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("cli@example.com"), "{out}");
    let (code, out, err) = ocart(
        &app.db,
        &[
            "cart",
            "mark-converted",
            &id,
            "--order-id",
            "77",
            "--revenue",
            "1250",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("converted"));
    app.eventually(&format!("/ocart/v1/carts/{id}"), |c| {
        c["status"] == "converted"
    })
    .await;
    let (code, _, err) = ocart(&app.db, &["cart", "mark-abandoned", "no-such-cart"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no cart"), "{err}");
    let (code, out, _) = ocart(&app.db, &["settings", "get", "recovery.consent_required"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "true");
    let (code, _, err) = ocart(
        &app.db,
        &["settings", "set", "recovery.abandoned_threshold_min", "2"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("recovery.abandoned_threshold_min"), "{err}");
    let (code, out, _) = ocart(&app.db, &["events", "export"]).await;
    assert_eq!(code, 0);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (count, _) = app.core.log.stats().await.unwrap();
    assert_eq!(lines.len() as i64, count);
    assert!(lines
        .iter()
        .any(|l| l["type"] == "cart/converted" && l["aggregate_id"] == id.as_str()));
    assert!(
        !out.contains("cli@example.com"),
        "exports keep personal data sealed"
    );
}

#[tokio::test]
async fn serve_runs_on_the_embedded_default_and_stops_gracefully_on_sigterm() {
    let db = ocart_tests::FreshDb::sqlite();
    let dir = db.dir().unwrap().clone();
    let port = ocart_tests::free_port();
    let bin = tokio::task::spawn_blocking(ocart_tests::ocart_bin)
        .await
        .unwrap();
    let start = || ocart_tests::serve_in(&bin, &dir, port, std::process::Stdio::piped);
    let client = reqwest::Client::new();
    let wait_up = || ocart_tests::wait_until_serving(&client, port);
    let child = start();
    wait_up().await;
    let resp = client
        .post(format!("http://127.0.0.1:{port}/ocart/v1/checkout/capture"))
        .json(&capture_body(&session(), "sig@example.com", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(
        dir.join("ocart.db").exists(),
        "the embedded default is ocart.db in the current directory"
    );
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("stops within 20 s")
        .unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("admin token"),
        "the first start shows the admin token: {stderr}"
    );
    assert!(stderr.contains("shutting down"), "{stderr}");
    // A restart resumes on the same file, and does not mint a second admin token.
    let child = start();
    wait_up().await;
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("admin token was created"));
    let pool = db.connect().await;
    let carts = ocart_projections::queries::all_carts(&pool).await.unwrap();
    assert_eq!(carts.len(), 1);
    assert_eq!(carts[0].email.as_deref(), Some("sig@example.com"));
}

#[tokio::test]
async fn events_tail_follows_the_log_as_json_lines() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let app = spawn_app(Kind::Postgres).await;
    let bin = tokio::task::spawn_blocking(ocart_tests::ocart_bin)
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(bin)
        .args(["events", "tail"])
        .env("OCART_DATABASE_URL", &app.db.url)
        .env_remove("OCART_NATS_URL")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Give tail a moment to reach the end of the log, then write something new.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let (_, reply) = app
        .capture(&capture_body(&session(), "tail@example.com", 1))
        .await;
    let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line within 10 s")
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["type"], "cart/created");
    assert_eq!(event["aggregate_id"], reply["cart_id"]);
    child.kill().await.unwrap();
}
