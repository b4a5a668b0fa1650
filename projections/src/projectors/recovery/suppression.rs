use async_trait::async_trait;
use ocart_domain::recovery::SuppressionEvent;

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Builds `suppression`: the recipients (by subject hash) OCart does not message. (An
/// unsubscribe's row in the deliverability feed is the `recovery_runs` projector's.)
pub struct SuppressionProjector;

#[async_trait]
impl Projector for SuppressionProjector {
    fn name(&self) -> &'static str {
        "suppression"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["suppression"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            if event.aggregate_type == "suppression" {
                suppression(tx, event).await?;
            }
        }
        Ok(())
    }
}

async fn suppression(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let recipient = event.aggregate_id.as_str();
    let position = event.global_position;
    let (reason, channel, source, at) =
        match decode_event::<SuppressionEvent>(&event.event_type, &event.payload)? {
            SuppressionEvent::Unsubscribed {
                channel,
                source,
                at,
            } => ("unsubscribe", channel, source, at),
            SuppressionEvent::Suppressed {
                reason,
                channel,
                source,
                at,
            } => (reason.as_str(), channel, source, at),
            SuppressionEvent::Lifted { .. } => {
                exec_tx!(
                    tx,
                    "DELETE FROM suppression WHERE recipient_hash = $1 AND last_position < $2",
                    recipient,
                    position
                )?;
                return Ok(());
            }
        };
    exec_tx!(
        tx,
        "INSERT INTO suppression (recipient_hash, channel, reason, source, created_at, last_position) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (recipient_hash) DO UPDATE SET \
         channel = excluded.channel, reason = excluded.reason, source = excluded.source, \
         created_at = excluded.created_at, last_position = excluded.last_position \
         WHERE suppression.last_position < excluded.last_position",
        recipient,
        channel.map(|c| c.as_str()),
        reason,
        source,
        at,
        position
    )?;
    Ok(())
}
