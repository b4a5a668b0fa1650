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

impl TryFrom<Row> for StoredEvent {
    type Error = sqlx::Error;
    fn try_from(r: Row) -> Result<Self, sqlx::Error> {
        Ok(StoredEvent {
            event_id: Uuid::parse_str(&r.event_id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: raw_json(r.payload, r.global_position, "payload")?,
            metadata: raw_json(r.metadata, r.global_position, "metadata")?,
            recorded_at: r.recorded_at,
            global_position: r.global_position,
            transaction_id: 0,
        })
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
    rows.into_iter().map(StoredEvent::try_from).collect()
}

/// The events of several streams in one statement (see `EventLog::load_many`).
pub(super) async fn load_many(
    pool: &SqlitePool,
    streams: &[(&str, &str)],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let filter = vec!["(aggregate_type = ? AND aggregate_id = ?)"; streams.len()].join(" OR ");
    let sql = format!("SELECT {COLUMNS} FROM events WHERE {filter} ORDER BY sequence");
    let mut query = sqlx::query_as::<_, Row>(&sql);
    for (aggregate_type, aggregate_id) in streams {
        query = query.bind(*aggregate_type).bind(*aggregate_id);
    }
    let rows: Vec<Row> = query.fetch_all(pool).await?;
    rows.into_iter().map(StoredEvent::try_from).collect()
}

/// One writer at a time commits, so rowid order is commit order and a plain position scan is
/// gap-free.
///
/// This is the hot read (every projection batch, the relay, a rebuild), so it does not go
/// through sqlx's row machinery: sqlx runs each SQLite connection on a worker thread and hands
/// every row, each column copied, over a channel, which cost 8–9 µs per event. Instead the
/// connection's handle is locked away from that worker (`lock_handle`, sqlx's API for direct
/// SQLite calls) and the rows are stepped here and copied once (ADR 0007).
pub(super) async fn read_after(
    pool: &SqlitePool,
    after: Checkpoint,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle();
    let read = || {
        // SAFETY: `db` is an open connection that `handle` keeps locked away from sqlx's
        // worker thread until it is dropped, after this call; nothing else uses it meanwhile.
        unsafe { raw::read_after(db.as_ptr(), after.position, limit) }
    };
    let rows = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        // Tell the scheduler this thread is busy for a moment (a large batch takes a few ms).
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(read),
        _ => read(),
    };
    rows.map_err(sqlx::Error::Protocol)
}

mod raw {
    //! Direct SQLite calls for [`super::read_after`].

    use std::ffi::CStr;
    use std::ptr;

    use chrono::{DateTime, Utc};
    use libsqlite3_sys as ffi;
    use uuid::Uuid;

    use crate::store::{raw_json, StoredEvent};

    const SQL: &CStr = c"SELECT event_id, aggregate_type, aggregate_id, sequence, event_type, \
        event_version, payload, metadata, recorded_at, global_position \
        FROM events WHERE global_position > ?1 ORDER BY global_position LIMIT ?2";

    /// Finalizes the statement however the read ends.
    struct Statement(*mut ffi::sqlite3_stmt);

    impl Drop for Statement {
        fn drop(&mut self) {
            // SAFETY: the statement was prepared on a connection that outlives this guard,
            // and is finalized exactly once, here.
            unsafe {
                ffi::sqlite3_finalize(self.0);
            }
        }
    }

    /// # Safety
    /// `db` must be an open connection that nothing else uses during the call.
    pub(super) unsafe fn read_after(
        db: *mut ffi::sqlite3,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, String> {
        let mut stmt = ptr::null_mut();
        // SAFETY (all calls below): `db` is valid per this function's contract; `stmt` is
        // the statement prepared here, alive until `_guard` drops; column pointers are read
        // before the next step, as SQLite requires.
        unsafe {
            let rc = ffi::sqlite3_prepare_v2(db, SQL.as_ptr(), -1, &mut stmt, ptr::null_mut());
            if rc != ffi::SQLITE_OK {
                return Err(error(db, "preparing the event read"));
            }
            let _guard = Statement(stmt);
            ffi::sqlite3_bind_int64(stmt, 1, after);
            ffi::sqlite3_bind_int64(stmt, 2, limit);
            let mut events = Vec::with_capacity(limit.clamp(0, 4096) as usize);
            loop {
                match ffi::sqlite3_step(stmt) {
                    ffi::SQLITE_ROW => events.push(row(stmt)?),
                    ffi::SQLITE_DONE => return Ok(events),
                    _ => return Err(error(db, "reading events")),
                }
            }
        }
    }

    /// # Safety
    /// `stmt` must be positioned on a row of [`SQL`].
    unsafe fn row(stmt: *mut ffi::sqlite3_stmt) -> Result<StoredEvent, String> {
        // SAFETY: per this function's contract.
        unsafe {
            let event_id = text(stmt, 0);
            let recorded_at = text(stmt, 8);
            let position = ffi::sqlite3_column_int64(stmt, 9);
            Ok(StoredEvent {
                event_id: Uuid::parse_str(event_id)
                    .map_err(|e| format!("event id {event_id:?}: {e}"))?,
                aggregate_type: text(stmt, 1).to_owned(),
                aggregate_id: text(stmt, 2).to_owned(),
                sequence: ffi::sqlite3_column_int64(stmt, 3),
                event_type: text(stmt, 4).to_owned(),
                event_version: text(stmt, 5).to_owned(),
                payload: raw_json(text(stmt, 6).to_owned(), position, "payload")
                    .map_err(|e| e.to_string())?,
                metadata: raw_json(text(stmt, 7).to_owned(), position, "metadata")
                    .map_err(|e| e.to_string())?,
                recorded_at: recorded_at
                    .parse::<DateTime<Utc>>()
                    .map_err(|e| format!("recorded_at {recorded_at:?}: {e}"))?,
                global_position: position,
                transaction_id: 0,
            })
        }
    }

    /// A text column, borrowed until the next step ("" if NULL or not UTF-8).
    ///
    /// # Safety
    /// `stmt` must be positioned on a row with column `i`.
    unsafe fn text<'a>(stmt: *mut ffi::sqlite3_stmt, i: i32) -> &'a str {
        // SAFETY: per this function's contract; SQLite's docs: call _text, then _bytes.
        unsafe {
            let p = ffi::sqlite3_column_text(stmt, i);
            if p.is_null() {
                return "";
            }
            let n = ffi::sqlite3_column_bytes(stmt, i);
            std::str::from_utf8(std::slice::from_raw_parts(p, n.max(0) as usize)).unwrap_or("")
        }
    }

    /// # Safety
    /// `db` must be an open connection.
    unsafe fn error(db: *mut ffi::sqlite3, doing: &str) -> String {
        // SAFETY: per this function's contract; SQLite owns the message.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) };
        format!("{doing}: {}", message.to_string_lossy())
    }
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
    rows.into_iter().map(StoredEvent::try_from).collect()
}

/// Binds an event's eight columns, in `INSERT`'s order.
macro_rules! bind_event {
    ($query:expr, $e:expr) => {
        $query
            .bind($e.event_id.to_string())
            .bind(&$e.aggregate_type)
            .bind(&$e.aggregate_id)
            .bind($e.sequence)
            .bind(&$e.event_type)
            .bind(&$e.event_version)
            .bind($e.payload.to_string())
            .bind($e.metadata.to_string())
    };
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
            query = bind_event!(query, e);
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
            let result = bind_event!(sqlx::query_scalar::<_, i64>(INSERT), e)
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
