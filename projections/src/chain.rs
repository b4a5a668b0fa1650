//! `ocart audit verify`: walks every aggregate's events in sequence order and checks the hash
//! chain (`hash = sha256(prev_hash ‖ type ‖ payload)`), the links and the sequence numbers.

use ocart_domain::metadata::{self, chain_hash, GENESIS_HASH};
use serde::Serialize;

use crate::db::Db;
use crate::store::scan_by_aggregate;

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

/// Verifies every event in the log.
pub async fn verify_chain(db: &Db) -> Result<ChainReport, sqlx::Error> {
    let mut report = ChainReport::default();
    let mut after: Key = (String::new(), String::new(), 0);
    let mut current: Option<(String, String)> = None;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut prev_sequence = 0i64;
    loop {
        let events = scan_by_aggregate(db, (&after.0, &after.1, after.2), 2000).await?;
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
            let stored_prev = e.meta(metadata::PREV_HASH).unwrap_or_default();
            if stored_prev != prev_hash {
                broken("prev_hash does not match the previous event's hash".into());
            }
            let expected = chain_hash(&stored_prev, &e.event_type, &e.payload_value());
            let stored = e.meta(metadata::HASH).unwrap_or_default();
            if stored != expected {
                broken(
                    "hash does not match the event's type and payload (the event was altered)"
                        .into(),
                );
            }
            prev_hash = stored;
            prev_sequence = e.sequence;
        }
    }
    Ok(report)
}
