//! The event log on SQLite: one writer connection, one transaction per group commit. One-event
//! commands go in multi-row inserts that skip a taken sequence; larger commands get a savepoint
//! each, so a conflicting command is rolled back alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::{
    raw_json, sort_out, AppendError, AppendJob, Checkpoint, Committed, NewEvent, StoredEvent,
};

#[derive(sqlx::FromRow)]
struct Row {
    event_id: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    recorded_at: DateTime<Utc>,
    global_position: i64,
}

impl From<Row> for StoredEvent {
    fn from(r: Row) -> Self {
        StoredEvent {
            event_id: Uuid::parse_str(&r.event_id).unwrap_or_default(),
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: raw_json(r.payload),
            metadata: raw_json(r.metadata),
            recorded_at: r.recorded_at,
            global_position: r.global_position,
            transaction_id: 0,
        }
    }
}

const COLUMNS: &str =
    "event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, \
    payload, metadata, recorded_at, global_position";

pub(super) async fn load(
    pool: &SqlitePool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM events WHERE aggregate_type = ? AND aggregate_id = ? ORDER BY sequence");
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// One writer at a time commits, so rowid order is commit order and a plain position scan is
/// gap-free.
pub(super) async fn read_after(
    pool: &SqlitePool,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE global_position > ? ORDER BY global_position LIMIT ?"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after.position)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

/// Events in primary-key order (aggregate_type, aggregate_id, sequence) after `after`.
pub(super) async fn scan_by_aggregate(
    pool: &SqlitePool,
    after: (&str, &str, i64),
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE (aggregate_type, aggregate_id, sequence) > (?, ?, ?) \
         ORDER BY aggregate_type, aggregate_id, sequence LIMIT ?"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after.0)
        .bind(after.1)
        .bind(after.2)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from).collect())
}

const INSERT: &str = "INSERT INTO events \
    (event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING global_position";

pub(super) async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &[AppendJob],
) -> Vec<Result<Vec<Committed>, AppendError>> {
    match try_commit(conn, batch).await {
        Ok(results) => results,
        Err(err) => batch
            .iter()
            .map(|_| Err(AppendError::Database(err.to_string())))
            .collect(),
    }
}

async fn try_commit(
    conn: &mut SqliteConnection,
    batch: &[AppendJob],
) -> Result<Vec<Result<Vec<Committed>, AppendError>>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let mut inserted: HashMap<Uuid, i64> = HashMap::new();
    // Commands of one event go in multi-row statements: a taken sequence skips that row alone
    // (ON CONFLICT DO NOTHING), which is exactly that command's conflict.
    let singles: Vec<&NewEvent> = batch
        .iter()
        .filter(|j| j.events.len() == 1)
        .map(|j| &j.events[0])
        .collect();
    for chunk in singles.chunks(SINGLES_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO events (event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) VALUES ",
        );
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 {
                "(?, ?, ?, ?, ?, ?, ?, ?)"
            } else {
                ", (?, ?, ?, ?, ?, ?, ?, ?)"
            });
        }
        sql.push_str(" ON CONFLICT (aggregate_type, aggregate_id, sequence) DO NOTHING RETURNING event_id, global_position");
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
        for e in chunk {
            query = query
                .bind(e.event_id.to_string())
                .bind(&e.aggregate_type)
                .bind(&e.aggregate_id)
                .bind(e.sequence)
                .bind(&e.event_type)
                .bind(&e.event_version)
                .bind(e.payload.to_string())
                .bind(e.metadata.to_string());
        }
        for (id, position) in query.fetch_all(&mut *tx).await? {
            if let Ok(id) = Uuid::parse_str(&id) {
                inserted.insert(id, position);
            }
        }
    }
    // Commands of several events: a savepoint each, so a conflict undoes that command alone.
    for job in batch.iter().filter(|j| j.events.len() > 1) {
        sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
        let mut conflict = false;
        let mut positions = Vec::with_capacity(job.events.len());
        for e in &job.events {
            let result = sqlx::query_scalar::<_, i64>(INSERT)
                .bind(e.event_id.to_string())
                .bind(&e.aggregate_type)
                .bind(&e.aggregate_id)
                .bind(e.sequence)
                .bind(&e.event_type)
                .bind(&e.event_version)
                .bind(e.payload.to_string())
                .bind(e.metadata.to_string())
                .fetch_one(&mut *tx)
                .await;
            match result {
                Ok(position) => positions.push((e.event_id, position)),
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    conflict = true;
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        if conflict {
            sqlx::query("ROLLBACK TO SAVEPOINT job")
                .execute(&mut *tx)
                .await?;
        } else {
            inserted.extend(positions);
        }
        sqlx::query("RELEASE SAVEPOINT job")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(sort_out(batch, &inserted))
}

/// One-event commands per INSERT statement (8 anonymous parameters each: SQLite binds those
/// by index; numbered ones cost a linear name lookup each).
const SINGLES_PER_STATEMENT: usize = 256;
