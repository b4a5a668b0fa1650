//! Process managers and projections: the abandonment sweeper on a manual clock, replay equals
//! the live projection, the processor lease across two instances, restart resumes.

use std::time::Duration;

use ocart_projections::{queries, Db};
use ocart_tests::{capture_body, session, spawn_app, spawn_on, test_config, FreshDb, Kind};
use serde_json::json;

/// The indexes on `carts`, sorted by name.
async fn cart_indexes(db: &Db) -> Vec<String> {
    let mut names: Vec<String> = match db {
        Db::Pg(p) => {
            sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = 'carts'")
                .fetch_all(p)
                .await
        }
        Db::Lite(p) => {
            sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'carts'",
            )
            .fetch_all(p)
            .await
        }
    }
    .unwrap();
    names.sort();
    names
}

async fn inactive_carts_are_abandoned_by_stage(kind: Kind) {
    let app = spawn_app(kind).await;
    let checkout = session();
    let (_, a) = app
        .capture(&capture_body(&checkout, "sw1@example.com", 1))
        .await;
    let mut cart_stage = capture_body(&session(), "sw2@example.com", 1);
    cart_stage["stage"] = json!("cart");
    let (_, b) = app.capture(&cart_stage).await;
    let a = a["cart_id"].as_str().unwrap().to_owned();
    let b = b["cart_id"].as_str().unwrap().to_owned();
    // 29 minutes: still active.
    app.clock.advance(chrono::Duration::minutes(29));
    app.settle().await;
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{a}")).await;
    assert_eq!(cart["status"], "active");
    // Past the 30-minute threshold: abandoned, the stage deciding the kind.
    app.clock.advance(chrono::Duration::minutes(2));
    let cart = app
        .eventually(&format!("/ocart/v1/carts/{a}"), |c| {
            c["status"] == "abandoned"
        })
        .await;
    assert_eq!(cart["abandonment_kind"], "checkout_abandoned");
    let cart = app
        .eventually(&format!("/ocart/v1/carts/{b}"), |c| {
            c["status"] == "abandoned"
        })
        .await;
    assert_eq!(cart["abandonment_kind"], "cart_abandoned");
    // The abandonment is recorded as the sweeper's.
    let events = app.core.log.load("cart", &a).await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.event_type, "cart/abandoned");
    assert_eq!(last.meta("actor").as_deref(), Some("system:sweeper"));
}

#[tokio::test]
async fn postgres_inactive_carts_are_abandoned_by_stage() {
    inactive_carts_are_abandoned_by_stage(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_inactive_carts_are_abandoned_by_stage() {
    inactive_carts_are_abandoned_by_stage(Kind::Sqlite).await;
}

#[tokio::test]
async fn admins_can_abandon_and_convert_a_cart() {
    let app = spawn_app(Kind::Sqlite).await;
    let (_, reply) = app
        .capture(&capture_body(&session(), "adm@example.com", 1))
        .await;
    let id = reply["cart_id"].as_str().unwrap();
    let (status, body) = app
        .post(
            &format!("/ocart/v1/carts/{id}/abandon"),
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "abandoned");
    let (status, body) = app
        .post(
            &format!("/ocart/v1/carts/{id}/convert"),
            Some(&app.admin),
            &json!({"order_id": "1001", "revenue": 1250}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{id}")).await;
    assert_eq!(cart["status"], "converted");
    assert_eq!(cart["order_id"], "1001");
    assert_eq!(cart["revenue_minor"], 1250);
    let (status, problem) = app
        .post(
            &format!("/ocart/v1/carts/{id}/abandon"),
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    let (status, _) = app
        .post("/ocart/v1/carts/nope/abandon", Some(&app.admin), &json!({}))
        .await;
    assert_eq!(status, 404);
    let audit = app
        .eventually("/ocart/v1/audit", |r| {
            r.as_array()
                .unwrap()
                .iter()
                .any(|row| row["action"] == "cart/converted")
        })
        .await;
    assert!(audit
        .as_array()
        .unwrap()
        .iter()
        .any(|row| row["action"] == "cart/abandoned" && row["object_id"] == id));
}

async fn a_rebuild_yields_exactly_the_live_rows(kind: Kind) {
    let app = spawn_app(kind).await;
    for i in 0..25 {
        let s = session();
        app.capture(&capture_body(&s, &format!("r{i}@example.com"), 1 + i % 3))
            .await;
        if i % 4 == 0 {
            app.capture(&capture_body(&s, &format!("r{i}@example.com"), 9))
                .await;
        }
        if i % 5 == 0 {
            let mut w = capture_body(&s, &format!("r{i}@example.com"), 9);
            w["consent"] = json!(false);
            app.capture(&w).await;
        }
    }
    app.clock.advance(chrono::Duration::minutes(45));
    let head = app.core.log.stats().await.unwrap().1;
    app.eventually("/ocart/v1/carts?status=active", |b| {
        b["carts"].as_array().unwrap().is_empty()
    })
    .await;
    let _ = head;
    let live = queries::all_carts(&app.core.db).await.unwrap();
    assert!(live.len() >= 15, "{}", live.len());
    let indexes = cart_indexes(&app.core.db).await;
    assert!(
        indexes.iter().any(|i| i == "carts_due") && indexes.iter().any(|i| i == "carts_email_hash"),
        "{indexes:?}"
    );
    let db = app.stop().await;
    // Rebuild with the CLI, as an operator would.
    let (code, out, err) = ocart_tests::ocart(&db, &["replay", "--all", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["projection"] == "carts"));
    let pool = db.connect().await;
    let rebuilt = queries::all_carts(&pool).await.unwrap();
    assert_eq!(rebuilt, live, "a rebuild gives exactly the live rows");
    assert_eq!(
        cart_indexes(&pool).await,
        indexes,
        "the rebuild dropped the secondary indexes while loading and made them again"
    );
}

#[tokio::test]
async fn postgres_a_rebuild_yields_exactly_the_live_rows() {
    a_rebuild_yields_exactly_the_live_rows(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_rebuild_yields_exactly_the_live_rows() {
    a_rebuild_yields_exactly_the_live_rows(Kind::Sqlite).await;
}

#[tokio::test]
async fn two_instances_share_the_work_without_both_running_processors() {
    let first = spawn_app(Kind::Postgres).await;
    let config = test_config(&first.db);
    let second_db = shallow(&first.db);
    let second = spawn_on(second_db, config).await;
    // Both serve; captures through either are projected once.
    for i in 0..10 {
        let app = if i % 2 == 0 { &first } else { &second };
        let (status, _) = app
            .capture(&capture_body(&session(), &format!("two{i}@example.com"), 1))
            .await;
        assert_eq!(status, 202);
    }
    first
        .eventually("/ocart/v1/carts?limit=50", |b| {
            b["carts"].as_array().unwrap().len() == 10
        })
        .await;
    let ocart_projections::Db::Pg(pool) = &first.core.db else {
        unreachable!()
    };
    let (holders,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(
        holders, 1,
        "exactly one instance holds the processors lease"
    );
    // Each event was applied once: the audit and carts tables have no duplicates by design, and
    // the checkpoint is single.
    let (rows,): (i64,) = sqlx::query_as("SELECT count(*) FROM checkpoints WHERE name = 'carts'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    // When the holder stops, the other takes over.
    let db = first.stop().await;
    let (_, reply) = second
        .capture(&capture_body(&session(), "after@example.com", 1))
        .await;
    let id = reply["cart_id"].as_str().unwrap().to_owned();
    for _ in 0..100 {
        if queries::get_cart(&second.core.db, &id)
            .await
            .unwrap()
            .is_some()
        {
            drop(db);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the second instance never took over the processors");
}

/// A second handle on the same database that does not drop it.
fn shallow(db: &FreshDb) -> FreshDb {
    db.alias()
}

#[tokio::test]
async fn a_restart_resumes_where_processing_stopped() {
    let app = spawn_app(Kind::Sqlite).await;
    let config = test_config(&app.db);
    for i in 0..5 {
        app.capture(&capture_body(&session(), &format!("rs{i}@example.com"), 1))
            .await;
    }
    app.eventually("/ocart/v1/carts", |b| {
        b["carts"].as_array().unwrap().len() == 5
    })
    .await;
    let db = app.stop().await;
    // Written while no server runs (e.g. by the CLI): the restarted server projects it.
    let (code, out, err) = ocart_tests::ocart(
        &db,
        &["settings", "set", "recovery.abandoned_threshold_min", "60"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let app = spawn_on(db, config).await;
    for i in 5..8 {
        app.capture(&capture_body(&session(), &format!("rs{i}@example.com"), 1))
            .await;
    }
    app.eventually("/ocart/v1/carts", |b| {
        b["carts"].as_array().unwrap().len() == 8
    })
    .await;
    let (_, settings) = app.admin_get("/ocart/v1/settings").await;
    assert_eq!(
        settings["settings"]["recovery"]["abandoned_threshold_min"],
        60
    );
    let (count,): (i64,) = match &app.core.db {
        ocart_projections::Db::Lite(p) => sqlx::query_as("SELECT count(*) FROM carts")
            .fetch_one(p)
            .await
            .unwrap(),
        ocart_projections::Db::Pg(_) => unreachable!(),
    };
    assert_eq!(count, 8, "nothing lost, nothing doubled");
}
