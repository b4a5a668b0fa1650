use async_trait::async_trait;
use ocart_domain::recovery::{SequenceEvent, TemplateEvent};
use sqlx::types::Json;

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Builds what recovery sends from: `recovery_sequences` (the sequences and their steps) and
/// `recovery_templates` (the saved templates).
pub struct RecoverySequencesProjector;

#[async_trait]
impl Projector for RecoverySequencesProjector {
    fn name(&self) -> &'static str {
        "recovery_sequences"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["recovery_sequences", "recovery_templates"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            match event.aggregate_type.as_str() {
                "recovery_sequence" => sequence(tx, event).await?,
                "recovery_template" => template(tx, event).await?,
                _ => {}
            }
        }
        Ok(())
    }
}

async fn sequence(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let id = &event.aggregate_id;
    let position = event.global_position;
    match decode_event::<SequenceEvent>(&event.event_type, &event.payload)? {
        SequenceEvent::Created { definition, at } => {
            exec_tx!(
                tx,
                "INSERT INTO recovery_sequences (sequence_id, name, trigger_type, steps, active, \
                 archived, created_at, updated_at, last_position) \
                 VALUES ($1, $2, $3, $4, $5, false, $6, $6, $7) ON CONFLICT (sequence_id) DO NOTHING",
                id,
                &definition.name,
                definition.trigger.as_str(),
                Json(&definition.steps),
                definition.active,
                at,
                position
            )?;
        }
        SequenceEvent::Updated { definition, at } => {
            exec_tx!(
                tx,
                "UPDATE recovery_sequences SET name = $2, trigger_type = $3, steps = $4, \
                 active = $5, updated_at = $6, last_position = $7 \
                 WHERE sequence_id = $1 AND last_position < $7",
                id,
                &definition.name,
                definition.trigger.as_str(),
                Json(&definition.steps),
                definition.active,
                at,
                position
            )?;
        }
        SequenceEvent::Archived { at } => {
            exec_tx!(
                tx,
                "UPDATE recovery_sequences SET archived = true, active = false, updated_at = $2, \
                 last_position = $3 WHERE sequence_id = $1 AND last_position < $3",
                id,
                at,
                position
            )?;
        }
    }
    Ok(())
}

async fn template(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let id = event.aggregate_id.as_str();
    let position = event.global_position;
    match decode_event::<TemplateEvent>(&event.event_type, &event.payload)? {
        TemplateEvent::Saved { content, at } => {
            exec_tx!(
                tx,
                "INSERT INTO recovery_templates (template_id, subject, preheader, html, text, sms, \
                 updated_at, last_position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (template_id) DO UPDATE SET subject = excluded.subject, \
                 preheader = excluded.preheader, html = excluded.html, text = excluded.text, \
                 sms = excluded.sms, updated_at = excluded.updated_at, \
                 last_position = excluded.last_position \
                 WHERE recovery_templates.last_position < excluded.last_position",
                id,
                &content.subject,
                &content.preheader,
                &content.html,
                &content.text,
                &content.sms,
                at,
                position
            )?;
        }
        TemplateEvent::Deleted { .. } => {
            exec_tx!(
                tx,
                "DELETE FROM recovery_templates WHERE template_id = $1 AND last_position < $2",
                id,
                position
            )?;
        }
    }
    Ok(())
}
