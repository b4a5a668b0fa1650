//! The event log on PostgreSQL. Appends are one multi-row `INSERT … SELECT FROM UNNEST` per
//! group commit; the global reader uses the xid8 snapshot technique (ADR 0003).

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    raw_json, sort_out, AppendError, AppendJob, Checkpoint, Committed, Inner, StoredEvent,
};

#[derive(sqlx::FromRow)]
struct Row {
    event_id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    recorded_at: DateTime<Utc>,
    global_position: i64,
    tx: i64,
}

impl TryFrom<Row> for StoredEvent {
    type Error = sqlx::Error;
    fn try_from(r: Row) -> Result<Self, sqlx::Error> {
        Ok(StoredEvent {
            event_id: r.event_id,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: raw_json(r.payload, r.global_position, "payload")?,
            metadata: raw_json(r.metadata, r.global_position, "metadata")?,
            recorded_at: r.recorded_at,
            global_position: r.global_position,
            transaction_id: r.tx,
        })
    }
}

const COLUMNS: &str =
    "event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, \
    payload::text AS payload, metadata::text AS metadata, recorded_at, global_position, \
    transaction_id::text::bigint AS tx";

pub(super) async fn load(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence");
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(StoredEvent::try_from).collect()
}

/// The events of several streams in one statement (see `EventLog::load_many`).
pub(super) async fn load_many(
    pool: &PgPool,
    streams: &[(&str, &str)],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let types: Vec<&str> = streams.iter().map(|(t, _)| *t).collect();
    let ids: Vec<&str> = streams.iter().map(|(_, i)| *i).collect();
    let sql = format!(
        "SELECT {COLUMNS} FROM events \
         WHERE (aggregate_type, aggregate_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
         ORDER BY aggregate_type, aggregate_id, sequence"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(types)
        .bind(ids)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(StoredEvent::try_from).collect()
}

/// Only transactions older than every transaction still running are read
/// (`transaction_id < pg_snapshot_xmin(pg_current_snapshot())`), so an event that commits
/// later can never land behind the reader's checkpoint.
pub(super) async fn read_after(
    pool: &PgPool,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events \
         WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
           AND (transaction_id, global_position) > ($1::bigint::text::xid8, $2) \
         ORDER BY transaction_id, global_position LIMIT $3"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after.tx)
        .bind(after.position)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(StoredEvent::try_from).collect()
}

const INSERT: &str = "INSERT INTO events \
    (event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
    SELECT e.event_id, e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, e.event_version, \
           e.payload::jsonb, e.metadata::jsonb \
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[]) \
         AS e(event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
    ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING \
    RETURNING event_id, global_position";

/// Commits as many jobs as possible in one transaction. A job whose sequence is taken is
/// answered with a conflict and the rest are committed without it.
pub(super) async fn commit_batch(
    pool: &PgPool,
    batch: &[AppendJob],
) -> Vec<Result<Vec<Committed>, AppendError>> {
    let mut results: Vec<Option<Result<Vec<Committed>, AppendError>>> =
        (0..batch.len()).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..batch.len()).collect();
    while !pending.is_empty() {
        match try_commit(pool, batch, &pending).await {
            Ok(outcome) => {
                let mut retry = Vec::new();
                let all_ok = outcome.iter().all(Result::is_ok);
                for (&index, result) in pending.iter().zip(outcome) {
                    match result {
                        Ok(committed) if all_ok => results[index] = Some(Ok(committed)),
                        Ok(_) => retry.push(index),
                        Err(err) => results[index] = Some(Err(err)),
                    }
                }
                pending = retry;
            }
            Err(err) => {
                for &index in &pending {
                    results[index] = Some(Err(AppendError::Database(err.to_string())));
                }
                pending.clear();
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or(Err(AppendError::Closed)))
        .collect()
}

/// One attempt: inserts every pending job; commits only if none conflicted.
async fn try_commit(
    pool: &PgPool,
    batch: &[AppendJob],
    pending: &[usize],
) -> Result<Vec<Result<Vec<Committed>, AppendError>>, sqlx::Error> {
    let count: usize = pending.iter().map(|&i| batch[i].events.len()).sum();
    let mut ids = Vec::with_capacity(count);
    let mut types = Vec::with_capacity(count);
    let mut agg_ids = Vec::with_capacity(count);
    let mut seqs = Vec::with_capacity(count);
    let mut event_types = Vec::with_capacity(count);
    let mut versions = Vec::with_capacity(count);
    let mut payloads = Vec::with_capacity(count);
    let mut metas = Vec::with_capacity(count);
    // Rows go in key order, so two writers inserting overlapping aggregates lock them in the
    // same order and cannot deadlock.
    let mut rows: Vec<&super::NewEvent> = pending
        .iter()
        .flat_map(|&i| batch[i].events.iter())
        .collect();
    rows.sort_by(|a, b| {
        (&a.aggregate_type, &a.aggregate_id, a.sequence).cmp(&(
            &b.aggregate_type,
            &b.aggregate_id,
            b.sequence,
        ))
    });
    {
        for e in rows {
            ids.push(e.event_id);
            types.push(e.aggregate_type.as_str());
            agg_ids.push(e.aggregate_id.as_str());
            seqs.push(e.sequence);
            event_types.push(e.event_type.as_str());
            versions.push(e.event_version.as_str());
            payloads.push(e.payload.to_string());
            metas.push(e.metadata.to_string());
        }
    }
    let mut tx = pool.begin().await?;
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(INSERT)
        .bind(&ids)
        .bind(&types)
        .bind(&agg_ids)
        .bind(&seqs)
        .bind(&event_types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metas)
        .fetch_all(&mut *tx)
        .await?;
    let inserted: HashMap<Uuid, i64> = rows.into_iter().collect();
    let jobs: Vec<&AppendJob> = pending.iter().map(|&i| &batch[i]).collect();
    let outcome = sort_out_refs(&jobs, &inserted);
    if outcome.iter().all(Result::is_ok) {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(outcome)
}

fn sort_out_refs(
    jobs: &[&AppendJob],
    inserted: &HashMap<Uuid, i64>,
) -> Vec<Result<Vec<Committed>, AppendError>> {
    jobs.iter()
        .map(|job| sort_out(std::slice::from_ref(*job), inserted).remove(0))
        .collect()
}

/// Wakes this process's readers when any process appends (LISTEN ocart_events).
pub(super) fn spawn_listener(pool: PgPool, inner: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            if inner.strong_count() == 0 {
                return;
            }
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(listener) => listener,
                Err(_) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if listener.listen("ocart_events").await.is_err() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            loop {
                match tokio::time::timeout(Duration::from_secs(5), listener.recv()).await {
                    Ok(Ok(_)) => match inner.upgrade() {
                        Some(inner) => inner.poke(),
                        None => return,
                    },
                    Ok(Err(_)) => break,
                    Err(_) => {
                        if inner.strong_count() == 0 {
                            return;
                        }
                    }
                }
            }
        }
    });
}

/// Events in primary-key order (aggregate_type, aggregate_id, sequence) after `after`.
pub(super) async fn scan_by_aggregate(
    pool: &PgPool,
    after: (&str, &str, i64),
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
         ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after.0)
        .bind(after.1)
        .bind(after.2)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(StoredEvent::try_from).collect()
}
