//! `ocart gateway rotate` (ADR 0016) through the CLI binary against the database a running app
//! shares: the WooCommerce webhook secret (generated, shown once), Stripe's webhook secret (on
//! standard input, never shown, sealed in the table) and the upsell token key (tokens issued
//! before still accepted until the old key retires). The app's clock is set to the wall clock
//! the CLI uses, then moved past the retirement time.

use std::process::Stdio;

use chrono::{DateTime, Duration, Utc};
use ocart_domain::order::{order_id_for, OrderCommand, OrderFacts, PaymentRef};
use ocart_domain::{Clock, Currency};
use ocart_projections::{CommandMeta, Db};
use ocart_tests::{ocart_bin, read, spawn_app, spawn_app_with, wc_order, Kind, TestApp};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

const WC_CONFIG_SECRET: &str = "wc-config-secret";
const WHSEC_CONFIG: &str = "whsec_rotation_config";
const WHSEC_ROLLED: &str = "whsec_rolled_by_stripe_9f3a7c";

/// `ocart ARGS` against the app's database with `stdin` on its standard input: (exit code,
/// stdout, stderr).
async fn ocart_with_stdin(app: &TestApp, args: &[&str], stdin: &str) -> (i32, String, String) {
    let bin = tokio::task::spawn_blocking(ocart_bin).await.expect("build");
    let data_dir = app.db.dir().cloned().unwrap_or_else(std::env::temp_dir);
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .env("OCART_DATABASE_URL", &app.db.url)
        .env("OCART_DATA_DIR", data_dir)
        .env_remove("OCART_NATS_URL")
        .env_remove("OCART_CONFIG")
        .env_remove("OCART_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ocart");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.as_bytes())
        .await
        .expect("write stdin");
    drop(input);
    let out = child.wait_with_output().await.expect("ocart output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a rotation with `--json` and answers its output.
async fn rotate(app: &TestApp, args: &[&str], stdin: &str) -> Value {
    let mut all = vec!["gateway", "rotate"];
    all.extend_from_slice(args);
    all.push("--json");
    let (code, out, err) = ocart_with_stdin(app, &all, stdin).await;
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).expect("json output")
}

fn retire_at(rotated: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rotated["previous_retire_at"].as_str().expect("retire"))
        .expect("rfc3339")
        .with_timezone(&Utc)
}

/// The app's clock at the wall clock, as the CLI's.
fn clock_to_wall(app: &TestApp) {
    app.clock.set(Utc::now());
}

fn problem_type(body: &Value) -> &str {
    body["type"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("https://ocart.dev/problems/")
}

/// The secrets' state of `purpose` in `GET /gateways`.
async fn secret_state(app: &TestApp, purpose: &str) -> Value {
    let (status, body) = app.admin_get("/ocart/v1/gateways").await;
    assert_eq!(status, 200, "{body}");
    body["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .find(|s| s["purpose"] == purpose)
        .cloned()
        .expect("the purpose's state")
}

async fn woocommerce_webhook_rotation(kind: Kind) {
    let app = spawn_app_with(kind, |c| {
        c.woocommerce.webhook_secret = Some(WC_CONFIG_SECRET.into());
    })
    .await;
    clock_to_wall(&app);
    let order = |id: u64| wc_order(id, "processing", "stripe", "25.00", "ann@example.com");
    let (status, body) = app
        .wc_webhook("order.created", &order(7001), Some(WC_CONFIG_SECRET))
        .await;
    assert_eq!(status, 200, "the config secret before any rotation: {body}");

    let rotated = rotate(&app, &["woocommerce-webhook", "--overlap", "1h"], "").await;
    assert_eq!(rotated["version"], 1, "{rotated}");
    let secret = rotated["secret"].as_str().expect("shown once").to_owned();
    assert!(secret.len() >= 43, "32 random bytes: {secret}");
    let retire = retire_at(&rotated);

    // The running server takes the printed secret at once.
    let (status, body) = app
        .wc_webhook("order.created", &order(7002), Some(&secret))
        .await;
    assert_eq!(status, 200, "the new secret: {body}");
    let (status, body) = app
        .wc_webhook("order.created", &order(7003), Some(WC_CONFIG_SECRET))
        .await;
    assert_eq!(status, 200, "the config secret within the overlap: {body}");
    let (status, problem) = app
        .wc_webhook("order.created", &order(7004), Some("a-wrong-secret"))
        .await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem_type(&problem), "bad-signature", "{problem}");

    let state = secret_state(&app, "woocommerce-webhook").await;
    assert_eq!(state["version"], 1, "{state}");
    assert_eq!(state["live"], 2, "{state}");
    assert_eq!(state["retiring"][0]["version"], 0, "{state}");
    let (code, out, err) = ocart_with_stdin(&app, &["gateway", "status", "--json"], "").await;
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains(&secret) && !out.contains(WC_CONFIG_SECRET),
        "{out}"
    );
    let status_out: Value = serde_json::from_str(&out).unwrap();
    assert!(
        status_out["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["purpose"] == "woocommerce-webhook" && s["version"] == 1),
        "{status_out}"
    );

    // Past the overlap the config secret is refused; the new one is not.
    app.clock.set(retire + Duration::seconds(1));
    let (status, problem) = app
        .wc_webhook("order.created", &order(7005), Some(WC_CONFIG_SECRET))
        .await;
    assert_eq!(status, 401, "the config secret after it retired: {problem}");
    assert_eq!(problem_type(&problem), "bad-signature");
    let (status, body) = app
        .wc_webhook("order.created", &order(7006), Some(&secret))
        .await;
    assert_eq!(status, 200, "{body}");
    let state = secret_state(&app, "woocommerce-webhook").await;
    assert_eq!(
        (state["live"].clone(), state["retiring"].clone()),
        (json!(1), json!([]))
    );

    // The audit log names the rotation, never the secret.
    let events = crate::gateways::events_of(&app, "gateway/secret_rotated").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["purpose"], "woocommerce-webhook");
    assert_eq!(events[0]["version"], 1);
    let audit = app
        .eventually("/ocart/v1/audit", |rows| {
            rows.as_array().is_some_and(|r| {
                r.iter()
                    .any(|row| row["action"] == "gateway/secret_rotated")
            })
        })
        .await;
    assert!(!audit.to_string().contains(&secret), "{audit}");
}

#[tokio::test]
async fn postgres_a_rotated_woocommerce_secret_is_accepted_and_the_old_one_retires() {
    woocommerce_webhook_rotation(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_rotated_woocommerce_secret_is_accepted_and_the_old_one_retires() {
    woocommerce_webhook_rotation(Kind::Sqlite).await;
}

/// A Stripe event about a payment OCart did not make: acknowledged once verified.
fn stripe_event(id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id, "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {"id": "pi_foreign", "object": "payment_intent", "metadata": {}}}
    }))
    .unwrap()
}

async fn deliver_stripe(app: &TestApp, id: &str, secret: &str) -> (u16, Value) {
    let body = stripe_event(id);
    let signature =
        ocart_api::gateways::stripe_signature::sign(&body, secret, app.clock.now().timestamp());
    read(
        app.client
            .post(app.url("/ocart/v1/webhooks/stripe"))
            .header("content-type", "application/json")
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await
            .expect("deliver"),
    )
    .await
}

/// The stored bytes of every row of `gateway_secrets`.
async fn raw_rows(app: &TestApp) -> Vec<(String, i64, Option<Vec<u8>>)> {
    let sql = "SELECT purpose, CAST(version AS BIGINT), sealed FROM gateway_secrets";
    match &app.core.db {
        Db::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
        Db::Lite(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
    }
}

async fn stripe_webhook_rotation(kind: Kind) {
    let app = spawn_app_with(kind, |c| {
        c.gateways.stripe = Some(
            serde_json::from_value(json!({
                "secret_key": "sk_test_never_shown",
                "webhook_secrets": [WHSEC_CONFIG],
                "api_base": "http://127.0.0.1:9",
                "timeout_secs": 1,
            }))
            .expect("stripe config"),
        );
    })
    .await;
    clock_to_wall(&app);

    // Refused before anything is stored: no --secret-stdin, or not a whsec_ secret.
    let (code, _, err) = ocart_with_stdin(&app, &["gateway", "rotate", "stripe-webhook"], "").await;
    assert_ne!(code, 0);
    assert!(err.contains("--secret-stdin"), "{err}");
    let (code, out, err) = ocart_with_stdin(
        &app,
        &["gateway", "rotate", "stripe-webhook", "--secret-stdin"],
        "sk_live_pasted_by_mistake\n",
    )
    .await;
    assert_ne!(code, 0);
    assert!(
        !format!("{out}{err}").contains("sk_live_pasted_by_mistake"),
        "{err}"
    );
    assert!(raw_rows(&app).await.is_empty());

    let (code, out, err) = ocart_with_stdin(
        &app,
        &[
            "gateway",
            "rotate",
            "stripe-webhook",
            "--secret-stdin",
            "--overlap",
            "2h",
        ],
        &format!("{WHSEC_ROLLED}\n"),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("version 1"), "{out}");
    assert!(
        !out.contains(WHSEC_ROLLED) && !err.contains(WHSEC_ROLLED),
        "never printed: {out}{err}"
    );

    // Sealed: the table's bytes do not hold the secret.
    let rows = raw_rows(&app).await;
    let stored = rows
        .iter()
        .find(|(p, v, _)| p == "stripe-webhook" && *v == 1)
        .and_then(|(_, _, sealed)| sealed.clone())
        .expect("version 1 is stored sealed");
    assert!(stored.len() > WHSEC_ROLLED.len());
    for needle in [WHSEC_ROLLED.as_bytes(), b"rolled_by_stripe"] {
        assert!(
            !stored.windows(needle.len()).any(|w| w == needle),
            "the stored bytes hold the secret"
        );
    }
    assert!(
        rows.iter()
            .any(|(p, v, sealed)| p == "stripe-webhook" && *v == 0 && sealed.is_none()),
        "version 0 (the config file's) is never written: {rows:?}"
    );

    let (status, body) = deliver_stripe(&app, "evt_new", WHSEC_ROLLED).await;
    assert_eq!(status, 200, "signed with the rolled secret: {body}");
    assert_eq!(body["result"], "ignored");
    let (status, body) = deliver_stripe(&app, "evt_old", WHSEC_CONFIG).await;
    assert_eq!(status, 200, "the earlier secret within the overlap: {body}");
    let (status, problem) = deliver_stripe(&app, "evt_bad", "whsec_wrong").await;
    assert_eq!(status, 401, "{problem}");
    assert_eq!(problem_type(&problem), "bad-signature", "{problem}");

    let (_, list) = app.admin_get("/ocart/v1/gateways").await;
    assert!(!list.to_string().contains("whsec_"), "{list}");

    let retire = retire_at(&crate::gateways::events_of(&app, "gateway/secret_rotated").await[0]);
    app.clock.set(retire + Duration::seconds(1));
    let (status, problem) = deliver_stripe(&app, "evt_old_2", WHSEC_CONFIG).await;
    assert_eq!(status, 401, "the config secret after it retired: {problem}");
    let (status, body) = deliver_stripe(&app, "evt_new_2", WHSEC_ROLLED).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn postgres_a_stripe_secret_from_stdin_is_sealed_verified_and_never_shown() {
    stripe_webhook_rotation(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_stripe_secret_from_stdin_is_sealed_verified_and_never_shown() {
    stripe_webhook_rotation(Kind::Sqlite).await;
}

fn meta(app: &TestApp) -> CommandMeta {
    CommandMeta::system("test", None, app.clock.now())
}

/// The store's paid order `order_id`, recorded through the aggregate.
async fn paid_order(app: &TestApp, order_id: &str) {
    let facts = OrderFacts {
        order_id: order_id.into(),
        status: "processing".into(),
        paid: true,
        payment_method: Some("sandbox".into()),
        currency: Currency::parse("currency", "USD").unwrap(),
        total: 5000,
        email_hash: None,
        placed_at: app.clock.now(),
        source: "api".into(),
        coupon_codes: Vec::new(),
        modified_at: Some(app.clock.now()),
        payment: Some(PaymentRef {
            gateway: "sandbox".into(),
            customer: None,
            payment_method: "pm_sandbox_ok".into(),
        }),
        offer_lines: Vec::new(),
    };
    app.core
        .orders
        .execute(
            &order_id_for(order_id).to_string(),
            OrderCommand::Record {
                facts: Box::new(facts),
                attribution: None,
                at: app.clock.now(),
            },
            &meta(app),
        )
        .await
        .expect("order recorded");
}

/// An upsell offer and a funnel `main` offering it at step `upsell`: the offer's id.
async fn upsell_funnel(app: &TestApp) -> String {
    let (status, body) = app
        .post(
            "/ocart/v1/upsells",
            Some(&app.admin),
            &json!({
                "name": "Mug warmer", "currency": "USD", "kind": "upsell",
                "product": {"product_id": 77, "name": "Mug warmer", "price": 2999, "quantity": 1},
                "pricing": {"type": "price", "amount": 1999},
                "display": {"headline": "Mug warmer", "copy": "Just for you"}
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let offer = body["id"].as_str().expect("offer id").to_owned();
    let (status, body) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": "main", "name": "Main", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": offer,
                 "branches": {"default": "thanks"}},
                {"key": "thanks", "type": "thank_you"}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    offer
}

async fn issue_token(app: &TestApp, order_id: &str) -> String {
    let (status, body) = app
        .post(
            "/ocart/v1/upsells/issue-token",
            Some(&app.admin),
            &json!({"order_id": order_id, "funnel_id": "main", "step": "upsell"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().expect("token").to_owned()
}

async fn accept(app: &TestApp, offer: &str, token: &str) -> (u16, Value) {
    read(
        app.client
            .post(app.url(&format!("/ocart/v1/upsells/{offer}/accept")))
            .header("content-type", "application/json")
            .body(json!({ "token": token }).to_string())
            .send()
            .await
            .expect("accept"),
    )
    .await
}

async fn upsell_key_rotation(kind: Kind) {
    let app = spawn_app(kind).await;
    clock_to_wall(&app);
    let offer = upsell_funnel(&app).await;
    for order in ["1001", "1002", "1003"] {
        paid_order(&app, order).await;
    }
    let before_a = issue_token(&app, "1001").await;
    let before_b = issue_token(&app, "1002").await;
    assert_eq!(
        before_a.split('.').count(),
        2,
        "version 0's tokens carry no version"
    );

    let rotated = rotate(&app, &["upsell-token", "--overlap", "10m"], "").await;
    assert_eq!(rotated["version"], 1, "{rotated}");
    assert!(
        rotated.get("secret").is_none(),
        "the key is never shown: {rotated}"
    );

    // New tokens move to the new key once the server has known it for a moment.
    let mut after = None;
    for _ in 0..100 {
        let token = issue_token(&app, "1003").await;
        if token.starts_with("k1.") {
            after = Some(token);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = after.expect("tokens are signed with the new key within seconds");

    let (status, body) = accept(&app, &offer, &before_a).await;
    assert_eq!(
        status, 202,
        "a token issued before, within the overlap: {body}"
    );

    // Past the overlap (the tokens themselves live 30 minutes): the old key is retired.
    app.clock.set(retire_at(&rotated) + Duration::seconds(1));
    let (status, problem) = accept(&app, &offer, &before_b).await;
    assert_eq!(status, 401, "a token under the retired key: {problem}");
    assert_eq!(problem_type(&problem), "upsell-token-invalid", "{problem}");
    let (status, body) = accept(&app, &offer, &after).await;
    assert_eq!(status, 202, "a token under the new key: {body}");

    let state = secret_state(&app, "upsell-token").await;
    assert_eq!(
        (state["version"].clone(), state["live"].clone()),
        (json!(1), json!(1))
    );
}

#[tokio::test]
async fn postgres_upsell_tokens_verify_across_a_key_rotation_until_the_old_key_retires() {
    upsell_key_rotation(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_upsell_tokens_verify_across_a_key_rotation_until_the_old_key_retires() {
    upsell_key_rotation(Kind::Sqlite).await;
}
