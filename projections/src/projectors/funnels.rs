use async_trait::async_trait;
use ocart_domain::funnel::{FunnelDefinition, FunnelEvent, FunnelStatus};

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Builds `funnels` (one row per funnel: status, trigger, settings) and `funnel_steps` (one
/// row per step). Every `funnel/created` and `funnel/updated` carries the whole definition, so
/// each event is applied from itself and the rows it guards.
pub struct FunnelsProjector;

#[async_trait]
impl Projector for FunnelsProjector {
    fn name(&self) -> &'static str {
        "funnels"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["funnels", "funnel_steps"]
    }

    fn indexes(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "funnels_status_priority",
                "CREATE INDEX IF NOT EXISTS funnels_status_priority ON funnels (status, priority)",
            ),
            (
                "funnel_steps_offer",
                "CREATE INDEX IF NOT EXISTS funnel_steps_offer ON funnel_steps (offer_id)",
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            if event.aggregate_type == "funnel" {
                funnel(tx, event).await?;
            }
        }
        Ok(())
    }
}

async fn funnel(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let slug = event.aggregate_id.as_str();
    let position = event.global_position;
    match decode_event::<FunnelEvent>(&event.event_type, &event.payload)? {
        FunnelEvent::Created {
            definition,
            status,
            at,
        } => {
            let inserted = exec_tx!(
                tx,
                "INSERT INTO funnels (slug, name, status, layout, theme, priority, is_default, \
                 trigger_rules, step_count, created_at, updated_at, last_position) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11) \
                 ON CONFLICT (slug) DO NOTHING",
                slug,
                &definition.name,
                status.as_str(),
                definition.settings.layout.as_str(),
                &definition.settings.theme,
                definition.trigger.priority,
                definition.trigger.is_default,
                serde_json::to_string(&definition.trigger.rules)?,
                step_count(&definition),
                at,
                position
            )?;
            if inserted > 0 {
                replace_steps(tx, slug, &definition).await?;
            }
        }
        FunnelEvent::Updated { definition, at } => {
            let updated = exec_tx!(
                tx,
                "UPDATE funnels SET name = $2, layout = $3, theme = $4, priority = $5, \
                 is_default = $6, trigger_rules = $7, step_count = $8, updated_at = $9, \
                 last_position = $10 WHERE slug = $1 AND last_position < $10",
                slug,
                &definition.name,
                definition.settings.layout.as_str(),
                &definition.settings.theme,
                definition.trigger.priority,
                definition.trigger.is_default,
                serde_json::to_string(&definition.trigger.rules)?,
                step_count(&definition),
                at,
                position
            )?;
            if updated > 0 {
                replace_steps(tx, slug, &definition).await?;
            }
        }
        FunnelEvent::Activated { at } => {
            status(tx, slug, FunnelStatus::Active, at, position).await?
        }
        FunnelEvent::Archived { at } => {
            status(tx, slug, FunnelStatus::Archived, at, position).await?
        }
    }
    Ok(())
}

fn step_count(definition: &FunnelDefinition) -> i32 {
    i32::try_from(definition.steps.len()).unwrap_or(i32::MAX)
}

async fn status(
    tx: &mut Tx,
    slug: &str,
    status: FunnelStatus,
    at: chrono::DateTime<chrono::Utc>,
    position: i64,
) -> anyhow::Result<()> {
    exec_tx!(
        tx,
        "UPDATE funnels SET status = $2, updated_at = $3, last_position = $4 \
         WHERE slug = $1 AND last_position < $4",
        slug,
        status.as_str(),
        at,
        position
    )?;
    Ok(())
}

/// The funnel's steps become exactly `definition`'s.
async fn replace_steps(
    tx: &mut Tx,
    slug: &str,
    definition: &FunnelDefinition,
) -> anyhow::Result<()> {
    exec_tx!(tx, "DELETE FROM funnel_steps WHERE funnel_id = $1", slug)?;
    for step in &definition.steps {
        exec_tx!(
            tx,
            "INSERT INTO funnel_steps (funnel_id, step_key, position, step_type, offer_id, branches) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            slug,
            &step.key,
            i64::from(step.position),
            step.kind.as_str(),
            step.offer_id.as_deref(),
            serde_json::to_string(&step.branches)?
        )?;
    }
    Ok(())
}
