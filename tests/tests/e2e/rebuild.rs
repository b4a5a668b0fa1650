//! Read tables belong to projectors: after a workload that touches every read table (captures,
//! consent withdrawal, erasure, abandonment, sends over SMTP, a restore click, orders by webhook
//! and by the order API, a suppression, a hard bounce, an unsubscribe, retention, admin
//! actions), `ocart replay --all` rebuilds every table exactly as it was live, row for row.

use chrono::Duration;
use hmac::{Hmac, Mac};
use ocart_domain::Clock;
use ocart_projections::{Checkpoint, Db};
use ocart_tests::{
    spawn_on, test_config, wc_order, FakeWoo, Kind, SmtpSink, TestApp, WOO_WEBHOOK_SECRET,
};
use serde_json::{json, Value};

use crate::orders::{link_path, no_redirects};
use crate::recovery::{capture, Manual};

const PROVIDER_SECRET: &str = "provider-secret";

/// Tables that are not read tables: the log, the key vault, the server's secrets and the
/// processors' own state (checkpoints, the SQLite lease row), and sqlx's migration history.
const NOT_READ_TABLES: &[&str] = &[
    "_sqlx_migrations",
    "events",
    "key_vault",
    "server_secrets",
    "gateway_secrets",
    "checkpoints",
    "leases",
];

/// Every table of the database, sorted.
async fn tables(db: &Db) -> Vec<String> {
    let mut names: Vec<String> =
        match db {
            Db::Pg(p) => {
                sqlx::query_scalar(
                    "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()",
                )
                .fetch_all(p)
                .await
            }
            Db::Lite(p) => sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .fetch_all(p)
            .await,
        }
        .unwrap();
    names.sort();
    names
}

/// Every row of `table`, all columns, ordered by its primary key (then by every column).
async fn rows(db: &Db, table: &str) -> Vec<String> {
    match db {
        Db::Pg(p) => {
            let key: Vec<String> = sqlx::query_scalar(
                "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = $1::regclass AND i.indisprimary \
                 ORDER BY array_position(i.indkey::int2[], a.attnum)",
            )
            .bind(table)
            .fetch_all(p)
            .await
            .unwrap();
            let mut order: Vec<String> = key.iter().map(|c| format!("t.{c}")).collect();
            order.push("to_jsonb(t)::text".into());
            sqlx::query_scalar(&format!(
                "SELECT to_jsonb(t)::text FROM {table} t ORDER BY {}",
                order.join(", ")
            ))
            .fetch_all(p)
            .await
            .unwrap()
        }
        Db::Lite(p) => {
            let columns: Vec<(String, i64)> = sqlx::query_as(&format!(
                "SELECT name, pk FROM pragma_table_info('{table}') ORDER BY cid"
            ))
            .fetch_all(p)
            .await
            .unwrap();
            let mut key: Vec<&(String, i64)> = columns.iter().filter(|(_, pk)| *pk > 0).collect();
            key.sort_by_key(|(_, pk)| *pk);
            let whole = columns
                .iter()
                .map(|(c, _)| format!("'{c}=' || quote({c})"))
                .collect::<Vec<_>>()
                .join(" || char(31) || ");
            let mut order: Vec<String> = key.iter().map(|(c, _)| c.clone()).collect();
            order.push("1".into());
            sqlx::query_scalar(&format!(
                "SELECT {whole} FROM {table} ORDER BY {}",
                order.join(", ")
            ))
            .fetch_all(p)
            .await
            .unwrap()
        }
    }
}

/// Every read table (the projectors' tables), by name.
async fn snapshot(db: &Db, read_tables: &[String]) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for table in read_tables {
        all.push((table.clone(), rows(db, table).await));
    }
    all
}

/// Runs `sql` (one statement) on `db`.
async fn execute(db: &Db, sql: &str) {
    match db {
        Db::Pg(p) => sqlx::query(sql).execute(p).await.map(drop),
        Db::Lite(p) => sqlx::query(sql).execute(p).await.map(drop),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A signed batch of provider delivery reports.
async fn deliver(app: &TestApp, events: Value) -> (u16, Value) {
    let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
    let t = app.clock.now().timestamp();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(PROVIDER_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    let signature = format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()));
    let request = app
        .client
        .post(app.url("/ocart/v1/webhooks/deliverability"))
        .header("content-type", "application/json")
        .header("x-ocart-signature", signature)
        .body(body);
    ocart_tests::read(request.send().await.unwrap()).await
}

/// The message the SMTP sink accepted for `to`, the last one.
fn message_to(sink: &SmtpSink, to: &str) -> String {
    sink.messages()
        .into_iter()
        .rev()
        .find(|m| m.to.iter().any(|r| r.trim_matches(['<', '>']) == to))
        .unwrap_or_else(|| panic!("no message to {to}"))
        .data
}

/// Patches the settings (after projecting: the handler reads the settings in force).
async fn patch_settings(m: &Manual, patch: Value) {
    m.project().await;
    let app = &m.app;
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&patch)
        .send()
        .await
        .unwrap();
    let (status, body) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{body}");
}

async fn a_rebuild_gives_exactly_the_live_tables(kind: Kind) {
    let sink = SmtpSink::start().await;
    let woo = FakeWoo::start().await;
    woo.set_product(42, true, "instock");
    let m = Manual::start(kind, |c| {
        sink.configure(c);
        woo.configure(c);
        c.email.webhook_secret = Some(PROVIDER_SECRET.into());
    })
    .await;
    let app = &m.app;

    // Admin actions: a settings change and a token.
    // (The processors do not run here: projecting before a request that reads keeps it from
    // waiting out its read-your-writes bound.)
    patch_settings(&m, json!({"recovery": {"abandoned_threshold_min": 40}})).await;
    m.project().await;
    app.token_with(&["ocart_view_reports"]).await;
    m.project().await;
    let resp = app
        .client
        .put(app.url("/ocart/v1/recovery/templates/winback"))
        .bearer_auth(&app.admin)
        .json(
            &json!({"subject": "We kept your cart", "html": "<p>{{ restore_url }}</p>",
                      "text": "{{ restore_url }}"}),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{body}");

    // Captures with consent; one shopper withdraws, one is suppressed by hand.
    let ann = capture(app, "ann@example.com").await;
    let bob = capture(app, "bob@example.com").await;
    let cy = capture(app, "cy@example.com").await;
    let _erin = capture(app, "erin@example.com").await;
    let _fay = capture(app, "fay@example.com").await;
    let s = ocart_tests::session();
    let (status, _) = app
        .capture(&ocart_tests::capture_body(&s, "dee@example.com", 1))
        .await;
    assert_eq!(status, 202);
    let mut withdraw = ocart_tests::capture_body(&s, "dee@example.com", 1);
    withdraw["consent"] = json!(false);
    let (status, reply) = app.capture(&withdraw).await;
    assert_eq!(
        (status, &reply["captured"]),
        (202, &json!(false)),
        "{reply}"
    );
    m.project().await;
    let (status, reply) = app
        .post(
            "/ocart/v1/recovery/suppression",
            Some(&app.admin),
            &json!({"recipient": "fay@example.com", "reason": "manual"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    // Abandonment, then the first email to everyone not suppressed, over SMTP.
    app.clock.advance(Duration::minutes(41));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    let report = m.dispatch().await;
    assert_eq!(report.sent, 4, "{report:?}");
    assert_eq!(report.stopped, 1, "{report:?}");

    // Erin asks to be erased.
    m.project().await;
    let (status, reply) = app
        .post(
            "/ocart/v1/privacy/erase",
            Some(&app.admin),
            &json!({"email": "erin@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    // Cy clicks the restore link and orders through the store's signed webhook.
    m.project().await;
    let restore = link_path(&message_to(&sink, "cy@example.com"), "r").unwrap();
    let resp = no_redirects().get(app.url(&restore)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    let mut order = wc_order(7001, "processing", "stripe", "25.00", "cy@example.com");
    let now = app.clock.now().format("%Y-%m-%dT%H:%M:%S").to_string();
    order["date_created_gmt"] = json!(now);
    order["meta_data"] = json!([{"id": 1, "key": "_ocart_restore",
        "value": restore.strip_prefix("/r/").unwrap()}]);
    let (status, reply) = app
        .wc_webhook("order.created", &order, Some(WOO_WEBHOOK_SECRET))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["attribution"]["cart_id"], cy.as_str());
    // An order through the order API, for nobody OCart knows.
    m.project().await;
    let (status, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({"order_id": "A-1", "status": "completed", "currency": "EUR",
                    "total": 1500, "email": "walk-in@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    // Funnels and offers: a bump taken at checkout and paid with its order, an upsell
    // accepted, charged, written and partly refunded, a second order's upsell declined.
    m.project().await;
    offers_and_upsells(&m).await;

    // Ann's mailbox bounces hard; Bob unsubscribes with one click.
    m.project().await;
    let ann_message = message_to(&sink, "ann@example.com");
    let message_id = crate::recovery::header(&ann_message, "Message-ID").unwrap();
    let (status, reply) = deliver(
        app,
        json!([{"id": "evt-1", "type": "bounce", "bounce_type": "hard",
                "detail": "550 5.1.1 user unknown", "message_id": message_id}]),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["recorded"], 1, "{reply}");
    m.project().await;
    let unsubscribe = link_path(&message_to(&sink, "bob@example.com"), "u").unwrap();
    let resp = app
        .client
        .post(app.url(&unsubscribe))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    m.project().await;
    let (_, feed) = app.admin_get("/ocart/v1/recovery/deliverability").await;
    let kinds: Vec<&str> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["send", "click", "bounce", "unsubscribe"] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }

    // Half a year on, retention: the carts expire, their shoppers are erased, and the feed
    // loses what is older than `recovery.deliverability_days`.
    app.clock.advance(Duration::days(182));
    let retention = ocart_processors::Retention::new(
        app.core.log.clone(),
        app.core.vault.clone(),
        app.clock.clone(),
    );
    let pruned = retention.prune().await.unwrap();
    assert!(pruned.deliverability_rows >= 6, "{pruned:?}");
    assert!(pruned.carts_expired >= 2, "{pruned:?}");
    m.project().await;
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{bob}")).await;
    assert_eq!(cart["status"], "expired", "{cart}");
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{ann}")).await;
    assert_eq!(cart["erased"], true, "{cart}");
    let (_, feed) = app.admin_get("/ocart/v1/recovery/deliverability").await;
    assert_eq!(feed["events"], json!([]), "the feed is pruned");

    // Life goes on after the prune: a new shopper is mailed (that row stays), an admin acts.
    capture(app, "gus@example.com").await;
    app.clock.advance(Duration::minutes(41));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    // Its second and third emails, the third with a coupon created in the store.
    for after in [Duration::hours(24), Duration::hours(48)] {
        app.clock.advance(after);
        assert_eq!(m.dispatch().await.sent, 1);
    }
    assert_eq!(woo.state.coupons.lock().unwrap().len(), 1);
    assert_eq!(retention.prune().await.unwrap(), Default::default());
    patch_settings(&m, json!({"recovery": {"abandoned_threshold_min": 30}})).await;
    m.project().await;
    let (_, feed) = app.admin_get("/ocart/v1/recovery/deliverability").await;
    assert_eq!(feed["events"].as_array().unwrap().len(), 3, "{feed}");

    // Every table but the log, the vault, secrets and processor state belongs to a projector.
    let mut read_tables: Vec<String> = app
        .core
        .projectors()
        .iter()
        .flat_map(|p| p.tables().iter().map(|t| (*t).to_owned()))
        .collect();
    read_tables.sort();
    let others: Vec<String> = tables(&app.core.db)
        .await
        .into_iter()
        .filter(|t| !NOT_READ_TABLES.contains(&t.as_str()))
        .collect();
    assert_eq!(others, read_tables, "every read table has a projector");

    // The audit log's ids are the positions of their events, as the API shows them.
    let (_, audit) = app.admin_get("/ocart/v1/audit").await;
    let audit = audit.as_array().unwrap();
    assert!(audit.len() >= 5, "{audit:?}");
    let events = app
        .core
        .log
        .read_after(Default::default(), 100_000)
        .await
        .unwrap();
    for entry in audit {
        let event = events
            .iter()
            .find(|e| e.event_id.to_string() == entry["event_id"])
            .unwrap();
        assert_eq!(entry["id"], event.global_position, "{entry}");
    }

    let live = snapshot(&app.core.db, &read_tables).await;
    for (table, rows) in &live {
        assert!(!rows.is_empty(), "the workload wrote {table}");
    }
    let owners: Vec<(&'static str, &'static [&'static str])> = app
        .core
        .projectors()
        .iter()
        .map(|p| (p.name(), p.tables()))
        .collect();
    let Manual { app, .. } = m;
    let db = app.stop().await;
    // Rebuild with the CLI, as an operator would.
    let (code, out, err) = ocart_tests::ocart(&db, &["replay", "--all", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let pool = db.connect().await;
    let rebuilt = snapshot(&pool, &read_tables).await;
    for ((table, live), (_, rebuilt)) in live.iter().zip(&rebuilt) {
        assert_eq!(
            rebuilt, live,
            "{table}: a rebuild gives exactly the live rows"
        );
    }

    // Each projector reads only its own tables while it applies: rebuilt alone, with every
    // other read table empty, it gives exactly its live rows too.
    for (name, owned) in &owners {
        for table in &read_tables {
            execute(&pool, &format!("DELETE FROM {table}")).await;
        }
        let (code, out, err) =
            ocart_tests::ocart(&db, &["replay", "--projection", name, "--json"]).await;
        assert_eq!(code, 0, "{name}: {out}{err}");
        for (table, live) in live.iter().filter(|(t, _)| owned.contains(&t.as_str())) {
            assert_eq!(
                &rows(&pool, table).await,
                live,
                "{table}: {name} rebuilt alone gives exactly the live rows"
            );
        }
    }
}

/// The funnels, offers and upsells part of the workload: every table of the `funnels`,
/// `offers` and `upsell_acceptances` projectors gets rows. The processors do not run here, so
/// the charge's outcomes are recorded as the charger records them.
async fn offers_and_upsells(m: &Manual) {
    use ocart_domain::upsell::{ChargeResult, OrderStrategy, RefundResult, UpsellCommand};
    let app = &m.app;
    let offer = |path: &str, body: Value| {
        let path = path.to_owned();
        async move {
            let (status, created) = app.post(&path, Some(&app.admin), &body).await;
            assert_eq!(status, 201, "{created}");
            m.project().await;
            created["id"].as_str().unwrap().to_owned()
        }
    };
    let product = json!({"product_id": 77, "name": "Mug warmer", "price": 2500, "quantity": 1});
    let bump = offer(
        "/ocart/v1/bumps",
        json!({"name": "Gift wrap", "currency": "EUR",
        "product": {"product_id": 7, "name": "Gift wrap", "price": 500, "quantity": 1},
        "pricing": {"type": "fixed_addon", "amount": 300}}),
    )
    .await;
    let upsell = offer(
        "/ocart/v1/upsells",
        json!({"name": "Warmer", "currency": "EUR",
        "product": product, "pricing": {"type": "discount_pct", "value": "20"}}),
    )
    .await;
    let downsell = offer(
        "/ocart/v1/upsells",
        json!({"name": "Warmer, less", "kind": "downsell",
        "currency": "EUR", "product": product, "pricing": {"type": "price", "amount": 1500}}),
    )
    .await;
    let (status, funnel) = app
        .post(
            "/ocart/v1/funnels",
            Some(&app.admin),
            &json!({"id": "main", "name": "Main", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "bump"}},
                {"key": "bump", "type": "bump", "offer_id": bump, "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": upsell,
                 "branches": {"accepted": "thanks", "declined": "downsell"}},
                {"key": "downsell", "type": "downsell", "offer_id": downsell,
                 "branches": {"default": "thanks"}},
                {"key": "thanks", "type": "thank_you"}]}),
        )
        .await;
    assert_eq!(status, 201, "{funnel}");
    m.project().await;
    let (status, activated) = app
        .post(
            "/ocart/v1/funnels/main/activate",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{activated}");
    m.project().await;

    // A checkout A/B test of the layout, running.
    let (status, test) = app
        .post(
            "/ocart/v1/tests",
            Some(&app.admin),
            &json!({"name": "Layouts", "surface": "checkout", "variants": [
                {"key": "a", "weight": 1, "serves": "two_step"},
                {"key": "b", "weight": 1, "serves": "one_step"}]}),
        )
        .await;
    assert_eq!(status, 201, "{test}");
    let test_id = test["id"].as_str().unwrap().to_owned();
    let (status, started) = app
        .post(
            &format!("/ocart/v1/tests/{test_id}/start"),
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{started}");
    m.project().await;

    // A shopper takes the bump at checkout and pays with it.
    let session = ocart_tests::session();
    let (status, _) = app
        .capture(&ocart_tests::capture_body(&session, "hal@example.com", 1))
        .await;
    assert_eq!(status, 202);
    m.project().await;
    // Their checkout resolves: the cart is assigned in the test, and converts.
    let (status, resolved) = app
        .admin_get(&format!(
            "/ocart/v1/funnels/resolve?session_token={session}"
        ))
        .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(
        resolved["tests"][0]["test_id"],
        json!(test_id),
        "{resolved}"
    );
    let cart_id = ocart_domain::cart::cart_id_for_session(&session).to_string();
    app.core.assigner.recorded().await;
    app.core
        .assignments
        .execute(
            &ocart_domain::abtest::assignment_id(&test_id, &cart_id),
            ocart_domain::abtest::AssignmentCommand::Convert {
                reference: "U-1".into(),
                revenue_minor: 2800,
                currency: None,
                at: app.clock.now(),
            },
            &ocart_projections::CommandMeta::system("abtest_conversions", None, app.clock.now()),
        )
        .await
        .expect("conversion");
    m.project().await;
    let (status, taken) = app
        .post(
            &format!("/ocart/v1/bumps/{bump}/accept"),
            None,
            &json!({"session_token": session}),
        )
        .await;
    assert_eq!(status, 200, "{taken}");
    for (order, cart_session) in [("U-1", Some(&session)), ("U-2", None)] {
        let mut body = json!({"order_id": order, "status": "processing", "currency": "EUR",
            "total": 2800, "email": "hal@example.com",
            "payment": {"gateway": "sandbox", "payment_method": "pm_sandbox_ok"},
            "lines": [{"product_id": 7, "quantity": 1, "total": 300, "offer_id": bump}]});
        if let Some(s) = cart_session {
            body["session_token"] = json!(s);
        }
        let (status, reply) = app.post("/ocart/v1/orders", Some(&app.admin), &body).await;
        assert_eq!(status, 200, "{reply}");
        m.project().await;
    }

    let token = |order: &str| {
        let order = order.to_owned();
        async move {
            let (status, issued) = app
                .post(
                    "/ocart/v1/upsells/issue-token",
                    Some(&app.admin),
                    &json!({"order_id": order, "funnel_id": "main", "step": "upsell"}),
                )
                .await;
            assert_eq!(status, 201, "{issued}");
            issued["token"].as_str().unwrap().to_owned()
        }
    };
    let first = token("U-1").await;
    let (status, accepted) = app
        .post(
            &format!("/ocart/v1/upsells/{upsell}/accept"),
            None,
            &json!({"token": first}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let acceptance = accepted["acceptance_id"].as_str().unwrap().to_owned();
    let meta = ocart_projections::CommandMeta::system("charger", None, app.clock.now());
    let at = app.clock.now();
    for command in [
        UpsellCommand::RecordCharge {
            result: ChargeResult::Unknown {
                charge_ref: None,
                reason: "timeout".into(),
            },
            at,
        },
        UpsellCommand::RecordCharge {
            result: ChargeResult::Succeeded {
                charge_ref: "sb_1".into(),
            },
            at,
        },
        UpsellCommand::RecordOrderWritten {
            order_id: "U-1-child".into(),
            strategy: OrderStrategy::A,
            at,
        },
        UpsellCommand::Refund {
            refund_id: "r-1".into(),
            amount: 500,
            reason: None,
            at,
        },
        UpsellCommand::RecordRefund {
            refund_id: "r-1".into(),
            result: RefundResult::Refunded {
                refund_ref: "sbre_1".into(),
            },
            at,
        },
    ] {
        app.core
            .acceptances
            .execute(&acceptance, command, &meta)
            .await
            .expect("charger step");
    }
    let second = token("U-2").await;
    let (status, declined) = app
        .post(
            &format!("/ocart/v1/upsells/{upsell}/decline"),
            None,
            &json!({"token": second}),
        )
        .await;
    assert_eq!(status, 200, "{declined}");
    m.project().await;
    let (_, report) = app.admin_get("/ocart/v1/reports/offers").await;
    assert!(report.to_string().contains(&upsell), "{report}");
}

#[tokio::test]
async fn postgres_a_rebuild_gives_exactly_the_live_tables_after_every_kind_of_change() {
    a_rebuild_gives_exactly_the_live_tables(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_rebuild_gives_exactly_the_live_tables_after_every_kind_of_change() {
    a_rebuild_gives_exactly_the_live_tables(Kind::Sqlite).await;
}

/// The projectors the recovery read tables were split into from one `recovery` projector.
const SPLIT_FROM_RECOVERY: [&str; 4] = [
    "orders",
    "recovery_runs",
    "recovery_sequences",
    "suppression",
];

/// A database projected by the one `recovery` projector of before (its checkpoint at N)
/// migrates to the projectors split from it, each at N: none applies again an event its
/// tables already hold, and every table stays as it was.
async fn an_old_recovery_checkpoint_passes_to_the_projectors_split_from_it(kind: Kind) {
    let m = Manual::start(kind, |_| {}).await;
    let app = &m.app;
    // Rows in each of the four's tables: the default sequence, a suppression, runs with their
    // messages, links and feed rows, an order.
    capture(app, "ann@example.com").await;
    capture(app, "bob@example.com").await;
    m.project().await;
    let (status, reply) = app
        .post(
            "/ocart/v1/recovery/suppression",
            Some(&app.admin),
            &json!({"recipient": "bob@example.com", "reason": "manual"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    app.clock.advance(Duration::minutes(41));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    m.project().await;
    let (status, reply) = app
        .post(
            "/ocart/v1/orders",
            Some(&app.admin),
            &json!({"order_id": "A-1", "status": "completed", "currency": "EUR",
                    "total": 1500, "email": "walk-in@example.com"}),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    m.project().await;

    let mut tables: Vec<String> = Vec::new();
    let mut at: Vec<Checkpoint> = Vec::new();
    for runner in app.core.runners().await.unwrap() {
        if SPLIT_FROM_RECOVERY.contains(&runner.name()) {
            at.push(runner.checkpoint());
        }
    }
    for projector in app.core.projectors() {
        if SPLIT_FROM_RECOVERY.contains(&projector.name()) {
            tables.extend(projector.tables().iter().map(|t| (*t).to_owned()));
        }
    }
    assert_eq!(at.len(), SPLIT_FROM_RECOVERY.len());
    let n = at[0];
    assert!(n.position > 0 && at.iter().all(|c| *c == n), "{at:?}");
    let live = snapshot(&app.core.db, &tables).await;
    let written = [
        "orders",
        "recovery_runs",
        "recovery_notifications",
        "recovery_links",
        "recovery_sequences",
        "suppression",
        "deliverability_events",
    ];
    for (table, rows) in live.iter().filter(|(t, _)| written.contains(&t.as_str())) {
        assert!(!rows.is_empty(), "the workload wrote {table}");
    }

    // The layout before the split: one `recovery` checkpoint at N, and the migration that
    // splits it not applied yet.
    let names = SPLIT_FROM_RECOVERY.map(|n| format!("'{n}'")).join(", ");
    execute(
        &app.core.db,
        &format!("DELETE FROM checkpoints WHERE name IN ({names})"),
    )
    .await;
    execute(
        &app.core.db,
        &format!(
            "INSERT INTO checkpoints (name, tx, position) VALUES ('recovery', {}, {})",
            n.tx, n.position
        ),
    )
    .await;
    execute(
        &app.core.db,
        "DELETE FROM _sqlx_migrations WHERE version = 11",
    )
    .await;
    let Manual { app, .. } = m;
    let db = app.stop().await;

    let (code, out, err) = ocart_tests::ocart(&db, &["migrate"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let pool = db.connect().await;
    let sql = "SELECT name, tx, position FROM checkpoints \
               WHERE name IN ('recovery', 'orders', 'recovery_runs', 'recovery_sequences', \
               'suppression') ORDER BY name";
    let saved: Vec<(String, i64, i64)> = match &pool {
        Db::Pg(p) => sqlx::query_as(sql).fetch_all(p).await,
        Db::Lite(p) => sqlx::query_as(sql).fetch_all(p).await,
    }
    .unwrap();
    let expected: Vec<(String, i64, i64)> = SPLIT_FROM_RECOVERY
        .iter()
        .map(|name| ((*name).to_owned(), n.tx, n.position))
        .collect();
    assert_eq!(saved, expected, "each takes the old checkpoint, which goes");
    pool.close().await;

    // Started again, each goes on from N: the tables are as they were.
    let mut config = test_config(&db);
    config.processors.enabled = false;
    let app = spawn_on(db, config).await;
    for runner in app.core.runners().await.unwrap() {
        if SPLIT_FROM_RECOVERY.contains(&runner.name()) {
            assert_eq!(runner.checkpoint(), n, "{}", runner.name());
            runner.catch_up().await.unwrap();
        }
    }
    assert_eq!(snapshot(&app.core.db, &tables).await, live);
}

#[tokio::test]
async fn postgres_an_old_recovery_checkpoint_passes_to_the_projectors_split_from_it() {
    an_old_recovery_checkpoint_passes_to_the_projectors_split_from_it(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_an_old_recovery_checkpoint_passes_to_the_projectors_split_from_it() {
    an_old_recovery_checkpoint_passes_to_the_projectors_split_from_it(Kind::Sqlite).await;
}
