use async_trait::async_trait;
use ocart_domain::settings::SettingsEvent;
use sqlx::types::Json;

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Keeps `settings_current`: the whole settings document as of the last change.
pub struct SettingsProjector;

#[async_trait]
impl Projector for SettingsProjector {
    fn name(&self) -> &'static str {
        "settings"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["settings_current"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events.iter().filter(|e| e.aggregate_type == "settings") {
            let SettingsEvent::Changed { values, .. } =
                decode_event::<SettingsEvent>(&event.event_type, &event.payload)?;
            exec_tx!(
                tx,
                "INSERT INTO settings_current (id, doc, position) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, position = excluded.position \
                 WHERE settings_current.position < excluded.position",
                &event.aggregate_id,
                Json(values),
                event.global_position
            )?;
        }
        Ok(())
    }
}
