//! `ocart audit verify`: walks every aggregate's events in sequence order and checks the hash
//! chain (`hash = sha256(prev_hash ‖ type ‖ payload)`), the links and the sequence numbers.

use ocart_domain::metadata::{self, chain_hash, GENESIS_HASH};
use serde::Serialize;

use crate::db::Db;
use crate::store::StoredEvent;

/// One event that does not verify.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Broken {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_id: String,
    pub global_position: i64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChainReport {
    pub events: u64,
    pub aggregates: u64,
    pub broken: Vec<Broken>,
}

type Key = (String, String, i64);

async fn page(db: &Db, after: &Key, limit: i64) -> Result<Vec<StoredEvent>, sqlx::Error> {
    // Keyset scan over the primary key (aggregate_type, aggregate_id, sequence).
    let sql = "SELECT event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
               recorded_at, global_position FROM events \
               WHERE (aggregate_type, aggregate_id, sequence) > ($1, $2, $3) \
               ORDER BY aggregate_type, aggregate_id, sequence LIMIT $4";
    Ok(match db {
        Db::Pg(pool) => {
            let rows: Vec<PgRow> = sqlx::query_as(sql)
                .bind(&after.0)
                .bind(&after.1)
                .bind(after.2)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.into_iter().map(Into::into).collect()
        }
        Db::Lite(pool) => {
            let rows: Vec<LiteRow> = sqlx::query_as(&crate::db::lite_sql(sql))
                .bind(&after.0)
                .bind(&after.1)
                .bind(after.2)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.into_iter().map(Into::into).collect()
        }
    })
}

#[derive(sqlx::FromRow)]
struct PgRow {
    event_id: uuid::Uuid,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: sqlx::types::Json<serde_json::Value>,
    metadata: sqlx::types::Json<serde_json::Value>,
    recorded_at: chrono::DateTime<chrono::Utc>,
    global_position: i64,
}

#[derive(sqlx::FromRow)]
struct LiteRow {
    event_id: String,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: sqlx::types::Json<serde_json::Value>,
    metadata: sqlx::types::Json<serde_json::Value>,
    recorded_at: chrono::DateTime<chrono::Utc>,
    global_position: i64,
}

impl From<PgRow> for StoredEvent {
    fn from(r: PgRow) -> Self {
        StoredEvent {
            event_id: r.event_id,
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: r.payload.0,
            metadata: r.metadata.0,
            recorded_at: r.recorded_at,
            global_position: r.global_position,
            transaction_id: 0,
        }
    }
}

impl From<LiteRow> for StoredEvent {
    fn from(r: LiteRow) -> Self {
        StoredEvent {
            event_id: uuid::Uuid::parse_str(&r.event_id).unwrap_or_default(),
            aggregate_type: r.aggregate_type,
            aggregate_id: r.aggregate_id,
            sequence: r.sequence,
            event_type: r.event_type,
            event_version: r.event_version,
            payload: r.payload.0,
            metadata: r.metadata.0,
            recorded_at: r.recorded_at,
            global_position: r.global_position,
            transaction_id: 0,
        }
    }
}

/// Verifies every event in the log.
pub async fn verify_chain(db: &Db) -> Result<ChainReport, sqlx::Error> {
    let mut report = ChainReport::default();
    let mut after: Key = (String::new(), String::new(), 0);
    let mut current: Option<(String, String)> = None;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut prev_sequence = 0i64;
    loop {
        let events = page(db, &after, 2000).await?;
        let Some(last) = events.last() else { break };
        after = (
            last.aggregate_type.clone(),
            last.aggregate_id.clone(),
            last.sequence,
        );
        for e in &events {
            report.events += 1;
            let key = (e.aggregate_type.clone(), e.aggregate_id.clone());
            if current.as_ref() != Some(&key) {
                current = Some(key);
                report.aggregates += 1;
                prev_hash = GENESIS_HASH.to_owned();
                prev_sequence = 0;
            }
            let mut broken = |reason: String| {
                report.broken.push(Broken {
                    aggregate_type: e.aggregate_type.clone(),
                    aggregate_id: e.aggregate_id.clone(),
                    sequence: e.sequence,
                    event_id: e.event_id.to_string(),
                    global_position: e.global_position,
                    reason,
                })
            };
            if e.sequence != prev_sequence + 1 {
                broken(format!(
                    "sequence {} follows {prev_sequence}: events are missing",
                    e.sequence
                ));
            }
            let stored_prev = e.meta(metadata::PREV_HASH).unwrap_or("");
            if stored_prev != prev_hash {
                broken("prev_hash does not match the previous event's hash".into());
            }
            let expected = chain_hash(stored_prev, &e.event_type, &e.payload);
            let stored = e.meta(metadata::HASH).unwrap_or("");
            if stored != expected {
                broken(
                    "hash does not match the event's type and payload (the event was altered)"
                        .into(),
                );
            }
            prev_hash = stored.to_owned();
            prev_sequence = e.sequence;
        }
    }
    Ok(report)
}
