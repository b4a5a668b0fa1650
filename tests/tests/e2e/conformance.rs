//! One conformance suite for both event-log backends.

use std::collections::HashSet;
use std::time::Duration;

use ocart_projections::{AppendError, Checkpoint, Db, EventLog, NewEvent};
use ocart_tests::{FreshDb, Kind};
use serde_json::json;
use uuid::Uuid;

fn event(aggregate: &str, sequence: i64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        aggregate_type: "probe".into(),
        aggregate_id: aggregate.into(),
        sequence,
        event_type: "probe/happened".into(),
        event_version: "1".into(),
        payload: json!({"n": sequence, "nested": {"b": 2, "a": 1}}),
        metadata: json!({"actor": "test"}),
    }
}

async fn open(kind: Kind) -> (FreshDb, EventLog) {
    let db = FreshDb::new(kind).await;
    let pool = db.connect().await;
    let log = EventLog::open(pool).await.expect("open log");
    (db, log)
}

async fn appends_load_back_in_order(kind: Kind) {
    let (_db, log) = open(kind).await;
    let committed = log
        .append(vec![event("a", 1), event("a", 2), event("a", 3)])
        .await
        .unwrap();
    assert_eq!(committed.len(), 3);
    assert!(committed
        .windows(2)
        .all(|w| w[0].global_position < w[1].global_position));
    let loaded = log.load("probe", "a").await.unwrap();
    assert_eq!(
        loaded.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(
        loaded[0].payload_value(),
        json!({"n": 1, "nested": {"a": 1, "b": 2}})
    );
    assert!(log.load("probe", "missing").await.unwrap().is_empty());
}

#[tokio::test]
async fn postgres_appends_load_back_in_order() {
    appends_load_back_in_order(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_appends_load_back_in_order() {
    appends_load_back_in_order(Kind::Sqlite).await;
}

async fn racing_writers_never_both_commit(kind: Kind) {
    let (_db, log) = open(kind).await;
    log.append(vec![event("race", 1)]).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(vec![event("race", 2), event("race", 3)]).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(AppendError::Conflict) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1, "exactly one racing command commits");
    let loaded = log.load("probe", "race").await.unwrap();
    assert_eq!(loaded.len(), 3, "no half-written command");
    // One-event commands racing for the same sequence (the group-commit fast path).
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            log.append(vec![event("race", 4)]).await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(committed) => {
                assert_eq!(committed.len(), 1);
                ok += 1;
            }
            Err(AppendError::Conflict) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 1, "exactly one racing one-event command commits");
    assert_eq!(log.load("probe", "race").await.unwrap().len(), 4);
}

#[tokio::test]
async fn postgres_racing_writers_never_both_commit() {
    racing_writers_never_both_commit(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_racing_writers_never_both_commit() {
    racing_writers_never_both_commit(Kind::Sqlite).await;
}

/// Many concurrent writers, some holding their transaction open on purpose (PostgreSQL), and a
/// reader that must see every event exactly once, with no gap, in a stable order.
async fn the_global_reader_sees_every_event_once(kind: Kind) {
    let (db, log) = open(kind).await;
    let writers = 16;
    let per_writer = 40;
    let slow_count = if kind == Kind::Postgres { 30 } else { 0 };
    let target = writers * per_writer + slow_count;
    let reader_log = log.clone();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut at = Checkpoint::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < target && tokio::time::Instant::now() < deadline {
            let batch = reader_log.read_after(at, 37).await.unwrap();
            if let Some(last) = batch.last() {
                assert!(last.checkpoint() > at, "the checkpoint only moves forward");
                at = last.checkpoint();
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen.extend(batch.into_iter().map(|e| (e.event_id, e.global_position)));
        }
        seen
    });
    // Slow transactions: each holds its insert uncommitted for a while (PostgreSQL only), so
    // later positions commit first.
    let mut slow = Vec::new();
    if let Db::Pg(pool) = log.db() {
        for i in 0..slow_count {
            let pool = pool.clone();
            slow.push(tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                let id = Uuid::now_v7();
                sqlx::query(
                    "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                     VALUES ($1, 'slow', $2, 1, 'probe/slow', '1', '{}', '{}')",
                )
                .bind(id)
                .bind(format!("slow-{i}"))
                .execute(&mut *tx)
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(20 + (i as u64 * 7) % 150)).await;
                tx.commit().await.unwrap();
                id
            }));
        }
    }
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for s in 1..=per_writer as i64 {
                let e = event(&format!("w{w}"), s);
                ids.push(e.event_id);
                log.append(vec![e]).await.unwrap();
            }
            ids
        }));
    }
    let mut expected: HashSet<Uuid> = HashSet::new();
    for t in tasks {
        expected.extend(t.await.unwrap());
    }
    for t in slow {
        expected.insert(t.await.unwrap());
    }
    let seen = reader.await.unwrap();
    let ids: Vec<Uuid> = seen.iter().map(|(id, _)| *id).collect();
    let unique: HashSet<Uuid> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no event is read twice");
    assert_eq!(
        unique, expected,
        "every committed event is read, none is skipped"
    );
    // A second reader from scratch sees the same order.
    let mut again = Vec::new();
    let mut at = Checkpoint::default();
    loop {
        let batch = log.read_after(at, 100).await.unwrap();
        let Some(last) = batch.last() else { break };
        at = last.checkpoint();
        again.extend(batch.into_iter().map(|e| e.event_id));
    }
    assert_eq!(again, ids, "the order is stable across readers");
    drop(db);
}

#[tokio::test]
async fn postgres_the_global_reader_sees_every_event_once() {
    the_global_reader_sees_every_event_once(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_the_global_reader_sees_every_event_once() {
    the_global_reader_sees_every_event_once(Kind::Sqlite).await;
}

async fn the_log_is_append_only(kind: Kind) {
    let (_db, log) = open(kind).await;
    log.append(vec![event("ro", 1)]).await.unwrap();
    let result = match log.db() {
        Db::Pg(pool) => sqlx::query("UPDATE events SET payload = '{}'")
            .execute(pool)
            .await
            .map(|_| ()),
        Db::Lite(pool) => sqlx::query("DELETE FROM events")
            .execute(pool)
            .await
            .map(|_| ()),
    };
    let err = result.expect_err("rewriting the log is refused");
    assert!(err.to_string().contains("append-only"), "{err}");
}

#[tokio::test]
async fn postgres_the_log_is_append_only() {
    the_log_is_append_only(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_the_log_is_append_only() {
    the_log_is_append_only(Kind::Sqlite).await;
}
