//! The event log: per-aggregate loads, group-committed appends with optimistic concurrency,
//! and the gap-free global reader, on PostgreSQL and SQLite.

mod pg;
mod streams;
// The one module with `unsafe`: the SQLite global reader (ADR 0007).
#[allow(unsafe_code)]
mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use uuid::Uuid;

use crate::db::{Backend, Db};

pub use streams::StreamWatch;
use streams::StreamWatchers;

/// An event about to be appended.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

/// An event as the log holds it. Payload and metadata stay raw JSON text: a consumer decodes
/// what it needs (usually straight into a typed event), and the relay forwards them verbatim.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Box<RawValue>,
    pub metadata: Box<RawValue>,
    pub recorded_at: DateTime<Utc>,
    pub global_position: i64,
    /// The committing transaction (PostgreSQL's xid8); 0 on SQLite.
    pub transaction_id: i64,
}

impl StoredEvent {
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            tx: self.transaction_id,
            position: self.global_position,
        }
    }

    /// One string entry of the metadata (read without parsing the rest into a tree).
    pub fn meta(&self, key: &str) -> Option<String> {
        meta_entry(self.metadata.get(), key)
    }

    /// The payload as a JSON tree (for consumers that pick fields by name). The text is
    /// valid JSON (checked when the event was read), so this only allocates.
    pub fn payload_value(&self) -> Value {
        serde_json::from_str(self.payload.get()).unwrap_or(Value::Null)
    }
}

/// Raw JSON text as read from the store. The stores only hold JSON OCart wrote (serde_json's
/// output; PostgreSQL also checks it as jsonb); anything else is an error naming the event and
/// the column, never a silent `null` that would reach projections and NATS.
pub(crate) fn raw_json(
    text: String,
    position: i64,
    column: &str,
) -> Result<Box<RawValue>, InvalidStoredJson> {
    RawValue::from_string(text).map_err(|e| InvalidStoredJson {
        position,
        column: column.to_owned(),
        reason: e.to_string(),
    })
}

/// An event whose stored payload or metadata is not JSON.
#[derive(Debug, thiserror::Error)]
#[error("the event at global position {position} holds invalid JSON in its {column}: {reason}")]
pub struct InvalidStoredJson {
    pub position: i64,
    pub column: String,
    pub reason: String,
}

impl From<InvalidStoredJson> for sqlx::Error {
    fn from(e: InvalidStoredJson) -> Self {
        sqlx::Error::Decode(Box::new(e))
    }
}

/// Finds `key` in a JSON object's text and returns it if it is a string.
fn meta_entry(json: &str, key: &str) -> Option<String> {
    use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

    struct Find<'k>(&'k str);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
            // serde_json checks that the whole object was read, so the rest is skipped.
            let mut found = None;
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if found.is_none() && key == self.0 {
                    found = map.next_value::<Value>()?.as_str().map(str::to_owned);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Find(key)).ok().flatten()
}

/// Where a reader has got to: the last (transaction, position) it handled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Checkpoint {
    pub tx: i64,
    pub position: i64,
}

/// What an append reports for each event it committed.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    pub event_id: Uuid,
    pub global_position: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer appended to the aggregate first (optimistic concurrency).
    #[error("another command changed the aggregate first")]
    Conflict,
    #[error("the event log is unavailable: {0}")]
    Database(String),
    #[error("the event log writer has stopped")]
    Closed,
}

struct AppendJob {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Committed>, AppendError>>,
}

/// The most jobs one group commit takes.
const MAX_BATCH: usize = 512;

/// The event log handle; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// SQLite allows one writer at a time: this process's writers (the appender and the
    /// projections) take turns here instead of colliding and sleeping in SQLite's busy handler.
    write_gate: Option<Arc<Mutex<()>>>,
    jobs: mpsc::Sender<AppendJob>,
    /// The highest position this process has committed or heard of; readers wait on it.
    head: watch::Sender<i64>,
    /// Readers waiting on one aggregate's next append (long polls).
    streams: Arc<StreamWatchers>,
    /// The highest position of each aggregate type this process has committed: a reader that
    /// must see this process's own writes of one type (auth: the tokens) waits for that, not
    /// for the whole log.
    type_heads: std::sync::Mutex<HashMap<String, i64>>,
}

impl EventLog {
    /// Starts the group-commit writers (and, on PostgreSQL, the LISTEN task that wakes readers
    /// when another process appends).
    pub async fn open(db: Db) -> anyhow::Result<Self> {
        let (jobs, rx) = mpsc::channel::<AppendJob>(8192);
        let head = watch::Sender::new(0);
        let write_gate = match db.backend() {
            Backend::Sqlite => Some(Arc::new(Mutex::new(()))),
            Backend::Postgres => None,
        };
        let inner = Arc::new(Inner {
            write_gate,
            db: db.clone(),
            jobs,
            head,
            streams: Arc::default(),
            type_heads: std::sync::Mutex::default(),
        });
        let rx = Arc::new(Mutex::new(rx));
        let writers = match db.backend() {
            Backend::Postgres => 4,
            Backend::Sqlite => 1,
        };
        for _ in 0..writers {
            let rx = rx.clone();
            let weak = Arc::downgrade(&inner);
            let db = db.clone();
            let lite_conn = match &db {
                Db::Lite(pool) => Some(pool.acquire().await?.detach()),
                Db::Pg(_) => None,
            };
            tokio::spawn(writer_loop(db, lite_conn, rx, weak));
        }
        if let Db::Pg(pool) = &db {
            pg::spawn_listener(pool.clone(), Arc::downgrade(&inner));
        }
        Ok(Self { inner })
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn backend(&self) -> Backend {
        self.inner.db.backend()
    }

    /// Appends the events of one command atomically. All events must belong to one aggregate
    /// and carry consecutive sequences; if any sequence is taken, nothing is written and the
    /// answer is [`AppendError::Conflict`].
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Committed>, AppendError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stream = (
            events[0].aggregate_type.clone(),
            events[0].aggregate_id.clone(),
        );
        let (reply, answer) = oneshot::channel();
        self.inner
            .jobs
            .send(AppendJob { events, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        let committed = answer.await.map_err(|_| AppendError::Closed)??;
        if let Some(last) = committed.last() {
            self.note_type_head(&stream.0, last.global_position);
        }
        self.inner.streams.appended(&stream.0, &stream.1);
        Ok(committed)
    }

    /// A registration on one aggregate's stream: its `notified()` completes at this process's
    /// next append to it (see [`StreamWatch`]).
    pub fn watch_stream(&self, aggregate_type: &str, aggregate_id: &str) -> StreamWatch {
        StreamWatch::new(self.inner.streams.clone(), aggregate_type, aggregate_id)
    }

    /// Every event of one aggregate, in sequence order.
    pub async fn load(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        match &self.inner.db {
            Db::Pg(pool) => pg::load(pool, aggregate_type, aggregate_id).await,
            Db::Lite(pool) => sqlite::load(pool, aggregate_type, aggregate_id).await,
        }
    }

    /// Every event of each of several aggregates, in one query: for each `(type, id)` asked,
    /// in the order asked, its events in sequence order (empty for a stream with none).
    pub async fn load_many(
        &self,
        streams: &[(&str, &str)],
    ) -> Result<Vec<Vec<StoredEvent>>, sqlx::Error> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let events = match &self.inner.db {
            Db::Pg(pool) => pg::load_many(pool, streams).await?,
            Db::Lite(pool) => sqlite::load_many(pool, streams).await?,
        };
        let mut out: Vec<Vec<StoredEvent>> = streams.iter().map(|_| Vec::new()).collect();
        for event in events {
            // A stream asked twice gets its events in the first slot only; few streams are
            // asked at once, so a scan is cheaper than a map.
            if let Some(slot) = streams.iter().position(|(t, i)| {
                *t == event.aggregate_type.as_str() && *i == event.aggregate_id.as_str()
            }) {
                out[slot].push(event);
            }
        }
        // Both backends answer each stream's events in sequence order.
        Ok(out)
    }

    /// Up to `limit` committed events after `after`, in the one global order. Never skips an
    /// event that commits later with a smaller position (see ADR 0003).
    pub async fn read_after(
        &self,
        after: Checkpoint,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let events = match &self.inner.db {
            Db::Pg(pool) => pg::read_after(pool, after, limit).await?,
            Db::Lite(pool) => sqlite::read_after(pool, after, limit).await?,
        };
        if let Some(last) = events.last() {
            self.note_head(last.global_position);
        }
        Ok(events)
    }

    /// The number of events in the log and the highest position.
    pub async fn stats(&self) -> Result<(i64, i64), sqlx::Error> {
        match &self.inner.db {
            Db::Pg(pool) => {
                sqlx::query_as("SELECT count(*), coalesce(max(global_position), 0) FROM events")
                    .fetch_one(pool)
                    .await
            }
            Db::Lite(pool) => {
                sqlx::query_as("SELECT count(*), coalesce(max(global_position), 0) FROM events")
                    .fetch_one(pool)
                    .await
            }
        }
    }

    /// Waits for this process's turn to write (SQLite); a no-op on PostgreSQL. Hold the guard
    /// for the whole write transaction.
    pub async fn write_turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.inner.write_gate {
            Some(gate) => Some(gate.clone().lock_owned().await),
            None => None,
        }
    }

    /// The highest position this process knows was committed.
    pub fn head(&self) -> i64 {
        *self.inner.head.borrow()
    }

    /// The highest position of an `aggregate_type` event this process has committed (0:
    /// none). Another process's writes are not in it.
    pub fn head_of(&self, aggregate_type: &str) -> i64 {
        self.inner
            .type_heads
            .lock()
            .expect("type heads")
            .get(aggregate_type)
            .copied()
            .unwrap_or(0)
    }

    fn note_type_head(&self, aggregate_type: &str, position: i64) {
        let mut heads = self.inner.type_heads.lock().expect("type heads");
        match heads.get_mut(aggregate_type) {
            Some(head) => *head = (*head).max(position),
            None => {
                heads.insert(aggregate_type.to_owned(), position);
            }
        }
    }

    /// A receiver that changes whenever new events may be readable.
    pub fn watch(&self) -> watch::Receiver<i64> {
        self.inner.head.subscribe()
    }

    /// Waits until new events may be readable, or `fallback` passes (the poll interval that
    /// covers writers in other processes).
    pub async fn wait_for_new(&self, seen: &mut watch::Receiver<i64>, fallback: Duration) {
        let _ = tokio::time::timeout(fallback, seen.changed()).await;
    }

    fn note_head(&self, position: i64) {
        self.inner.head.send_if_modified(|head| {
            if position > *head {
                *head = position;
                true
            } else {
                false
            }
        });
    }
}

impl Inner {
    fn wake(&self, position: i64) {
        self.head.send_modify(|head| *head = (*head).max(position));
    }

    /// Something may have been appended elsewhere: wake every reader.
    fn poke(&self) {
        self.head.send_modify(|_| {});
    }
}

async fn writer_loop(
    db: Db,
    mut lite_conn: Option<sqlx::SqliteConnection>,
    rx: Arc<Mutex<mpsc::Receiver<AppendJob>>>,
    inner: std::sync::Weak<Inner>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => batch.push(job),
                None => return,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        metrics::histogram!("ocart_append_batch_size").record(batch.len() as f64);
        let gate = inner.upgrade().and_then(|i| i.write_gate.clone());
        let _turn = match &gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        let results = match (&db, lite_conn.as_mut()) {
            (Db::Pg(pool), _) => pg::commit_batch(pool, &batch).await,
            (Db::Lite(_), Some(conn)) => sqlite::commit_batch(conn, &batch).await,
            (Db::Lite(_), None) => unreachable!("the SQLite writer owns a connection"),
        };
        let mut top = 0;
        let mut appended = 0u64;
        for (job, result) in batch.into_iter().zip(results) {
            if let Ok(committed) = &result {
                appended += committed.len() as u64;
                top = committed
                    .iter()
                    .map(|c| c.global_position)
                    .max()
                    .unwrap_or(0)
                    .max(top);
            }
            let _ = job.reply.send(result);
        }
        drop(_turn);
        metrics::counter!("ocart_events_appended_total").increment(appended);
        if top > 0 {
            match inner.upgrade() {
                Some(inner) => inner.wake(top),
                None => return,
            }
        }
    }
}

/// Events in primary-key order after `after` = (aggregate_type, aggregate_id, sequence): how
/// `ocart audit verify` walks each aggregate's chain.
pub async fn scan_by_aggregate(
    db: &Db,
    after: (&str, &str, i64),
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    match db {
        Db::Pg(pool) => pg::scan_by_aggregate(pool, after, limit).await,
        Db::Lite(pool) => sqlite::scan_by_aggregate(pool, after, limit).await,
    }
}

/// Splits a batch result: jobs whose events were all inserted, and the rest.
fn sort_out(
    batch: &[AppendJob],
    inserted: &std::collections::HashMap<Uuid, i64>,
) -> Vec<Result<Vec<Committed>, AppendError>> {
    batch
        .iter()
        .map(|job| {
            let committed: Vec<Committed> = job
                .events
                .iter()
                .filter_map(|e| {
                    inserted.get(&e.event_id).map(|&p| Committed {
                        event_id: e.event_id,
                        global_position: p,
                    })
                })
                .collect();
            if committed.len() == job.events.len() {
                Ok(committed)
            } else {
                Err(AppendError::Conflict)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::meta_entry;

    #[test]
    fn a_metadata_entry_is_found_wherever_it_is() {
        let json = r#"{"actor": "cli:root", "hash": "abc", "n": {"x": [1, 2]}, "ip": null}"#;
        assert_eq!(meta_entry(json, "actor").as_deref(), Some("cli:root"));
        assert_eq!(meta_entry(json, "hash").as_deref(), Some("abc"));
        assert_eq!(meta_entry(json, "ip"), None);
        assert_eq!(meta_entry(json, "n"), None);
        assert_eq!(meta_entry(json, "missing"), None);
        assert_eq!(meta_entry("not json", "actor"), None);
    }
}
