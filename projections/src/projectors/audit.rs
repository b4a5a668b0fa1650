use async_trait::async_trait;
use ocart_domain::metadata;
use serde_json::{json, Value};
use sqlx::types::Json;

use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Builds `audit_log`: one row for every event an administrator caused (actor `token:…` or
/// `cli:…`), with what changed, under the event's global position as its id (so a rebuild
/// keeps every id). Secrets (token hashes) are left out of the diff.
pub struct AuditProjector;

/// Whether an actor is a person acting as administrator (not the public or a processor).
pub fn is_admin_actor(actor: &str) -> bool {
    actor.starts_with("token:") || actor.starts_with("cli:")
}

fn diff_of(event: &StoredEvent) -> Value {
    let payload = event.payload_value();
    match event.event_type.as_str() {
        "settings/changed" => {
            json!({ "changes": payload.get("changes").cloned().unwrap_or(Value::Null) })
        }
        "token/created" => json!({
            "name": payload.get("name").cloned().unwrap_or(Value::Null),
            "capabilities": payload.get("capabilities").cloned().unwrap_or(Value::Null),
        }),
        _ => {
            let mut payload = payload;
            if let Some(map) = payload.as_object_mut() {
                map.remove("token_hash");
            }
            payload
        }
    }
}

#[async_trait]
impl Projector for AuditProjector {
    fn name(&self) -> &'static str {
        "audit_log"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["audit_log"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            let actor = event.meta(metadata::ACTOR).unwrap_or_default();
            if !is_admin_actor(&actor) {
                continue;
            }
            let at = event
                .meta(metadata::OCCURRED_AT)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                .map(|d| d.with_timezone(&chrono::Utc))
                .unwrap_or(event.recorded_at);
            // The entry's id is the event's global position: fixed in the log, so a rebuild
            // keeps it.
            exec_tx!(
                tx,
                "INSERT INTO audit_log (id, event_id, actor, action, object_type, object_id, diff, ip, at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
                event.global_position,
                event.event_id.to_string(),
                actor,
                &event.event_type,
                &event.aggregate_type,
                &event.aggregate_id,
                Json(diff_of(event)),
                event.meta(metadata::IP),
                at
            )?;
        }
        Ok(())
    }
}
