//! The deliverability feed, `deliverability_events`: what happened to recovery messages (send,
//! delivery, open, click, bounce, complaint) and unsubscribes. Written by the `recovery_runs`
//! projector alone, since a message's row takes its channel and recipient from the run.

use chrono::{DateTime, Utc};
use ocart_domain::recovery::{FeedEvent, SuppressionEvent};

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::store::StoredEvent;

/// One row of the deliverability feed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn row(
    tx: &mut Tx,
    position: i64,
    kind: &str,
    run_id: Option<&str>,
    message_key: Option<&str>,
    channel: Option<&str>,
    recipient_hash: Option<&str>,
    detail: Option<&str>,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    exec_tx!(
        tx,
        "INSERT INTO deliverability_events (position, kind, run_id, message_key, channel, \
         recipient_hash, detail, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (position) DO NOTHING",
        position,
        kind,
        run_id,
        message_key,
        channel,
        recipient_hash,
        detail,
        at
    )?;
    Ok(())
}

/// An unsubscribe (the shopper's own, or a suppression for that reason) is a row of the feed;
/// the `suppression` projector records the suppression itself.
pub(super) async fn unsubscribed(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let (channel, source, at) =
        match decode_event::<SuppressionEvent>(&event.event_type, &event.payload)? {
            SuppressionEvent::Unsubscribed {
                channel,
                source,
                at,
            } => (channel, source, at),
            SuppressionEvent::Suppressed {
                reason,
                channel,
                source,
                at,
            } if reason.as_str() == "unsubscribe" => (channel, source, at),
            SuppressionEvent::Suppressed { .. } | SuppressionEvent::Lifted { .. } => return Ok(()),
        };
    row(
        tx,
        event.global_position,
        "unsubscribe",
        None,
        source.as_deref(),
        channel.map(|c| c.as_str()),
        Some(&event.aggregate_id),
        None,
        at,
    )
    .await
}

/// Retention's cut-off (`recovery/deliverability_pruned`): the feed's rows recorded before it
/// leave, here, so a rebuild deletes the same rows at the same point of the log.
pub(super) async fn pruned(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let FeedEvent::Pruned { before, .. } =
        decode_event::<FeedEvent>(&event.event_type, &event.payload)?;
    exec_tx!(
        tx,
        "DELETE FROM deliverability_events WHERE at < $1",
        before
    )?;
    Ok(())
}
