use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ocart_domain::order::OrderEvent;
use ocart_domain::recovery::{RestoreOutcome, RunEvent, Step};
use sqlx::types::Json;

use super::feed;
use crate::commands::decode_event;
use crate::db::Tx;
use crate::runner::Projector;
use crate::store::StoredEvent;
use crate::{exec_tx, fetch_optional_tx};

/// Builds a recovery run and what hangs on it: `recovery_runs`, `recovery_notifications` (one
/// row per message and its lifecycle: queued, attempted, sent, delivered, failed,
/// retry_queued, canceled), `recovery_links` (the tokens a message carries),
/// `recovery_restores` (restore clicks), `recovery_coupons` (issued with a message, used by
/// an order, expired) and the deliverability feed `deliverability_events`.
pub struct RecoveryRunsProjector;

#[async_trait]
impl Projector for RecoveryRunsProjector {
    fn name(&self) -> &'static str {
        "recovery_runs"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "recovery_runs",
            "recovery_notifications",
            "recovery_links",
            "recovery_restores",
            "recovery_coupons",
            "deliverability_events",
        ]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            match event.aggregate_type.as_str() {
                "recovery_run" => run(tx, event).await?,
                "order" => coupons_used(tx, event).await?,
                "suppression" => feed::unsubscribed(tx, event).await?,
                "deliverability_feed" => feed::pruned(tx, event).await?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// A recovery coupon on an order is spent (single use), whatever the order's status.
async fn coupons_used(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let OrderEvent::Recorded { facts, .. } =
        decode_event::<OrderEvent>(&event.event_type, &event.payload)?
    else {
        return Ok(());
    };
    for code in &facts.coupon_codes {
        exec_tx!(
            tx,
            "UPDATE recovery_coupons SET status = 'used', used_order_id = $2, \
             last_position = $3 WHERE code = $1 AND status <> 'used'",
            code,
            &facts.order_id,
            event.global_position
        )?;
    }
    Ok(())
}

/// Queues the message of `step` (1-based) of a run, if the run has that step.
async fn queue(
    tx: &mut Tx,
    run_id: &str,
    steps: &[Step],
    (step, attempt): (u32, u32),
    status: &str,
    due_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    let Some(definition) = steps.get(step as usize - 1) else {
        return Ok(());
    };
    exec_tx!(
        tx,
        "INSERT INTO recovery_notifications (run_id, step, attempt, channel, template, status, \
         message_key, due_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (run_id, step, attempt) DO NOTHING",
        run_id,
        step as i32,
        attempt as i32,
        definition.channel.as_str(),
        &definition.template,
        status,
        ocart_domain::recovery::message_key(run_id, step, attempt),
        due_at,
        at
    )?;
    Ok(())
}

async fn notification(
    tx: &mut Tx,
    run_id: &str,
    step: u32,
    attempt: u32,
    status: &str,
    error: Option<&str>,
    at: DateTime<Utc>,
) -> anyhow::Result<()> {
    exec_tx!(
        tx,
        "UPDATE recovery_notifications SET status = $4, error = $5, updated_at = $6 \
         WHERE run_id = $1 AND step = $2 AND attempt = $3",
        run_id,
        step as i32,
        attempt as i32,
        status,
        error,
        at
    )?;
    Ok(())
}

async fn steps_of(tx: &mut Tx, run_id: &str) -> anyhow::Result<Vec<Step>> {
    let row: Option<(Json<Vec<Step>>,)> = fetch_optional_tx!(
        tx,
        (Json<Vec<Step>>,),
        "SELECT steps FROM recovery_runs WHERE run_id = $1",
        run_id
    )?;
    Ok(row.map(|(steps,)| steps.0).unwrap_or_default())
}

async fn cancel_queued(tx: &mut Tx, run_id: &str, at: DateTime<Utc>) -> anyhow::Result<()> {
    exec_tx!(
        tx,
        "UPDATE recovery_notifications SET status = 'canceled', updated_at = $2 \
         WHERE run_id = $1 AND status IN ('queued', 'retry_queued')",
        run_id,
        at
    )?;
    Ok(())
}

/// The channel and recipient of a run's message (by its message key's notification).
async fn message_target(
    tx: &mut Tx,
    run_id: &str,
    message_key: &str,
) -> anyhow::Result<(Option<String>, Option<String>)> {
    let row: Option<(String, Option<String>, Option<String>)> = fetch_optional_tx!(
        tx,
        (String, Option<String>, Option<String>),
        "SELECT n.channel, r.email_hash, r.phone_hash FROM recovery_notifications n \
         JOIN recovery_runs r ON r.run_id = n.run_id WHERE n.run_id = $1 AND n.message_key = $2",
        run_id,
        message_key
    )?;
    Ok(match row {
        Some((channel, email, phone)) => {
            let recipient = if channel == "sms" { phone } else { email };
            (Some(channel), recipient)
        }
        None => (None, None),
    })
}

async fn run(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let id = event.aggregate_id.as_str();
    let position = event.global_position;
    match decode_event::<RunEvent>(&event.event_type, &event.payload)? {
        RunEvent::Started {
            start,
            next_due_at,
            at,
        } => {
            exec_tx!(
                tx,
                "INSERT INTO recovery_runs (run_id, cart_id, sequence_id, status, current_step, \
                 total_steps, steps, next_due_at, email_hash, phone_hash, abandoned_at, started_at, \
                 updated_at, last_position) \
                 VALUES ($1, $2, $3, 'pending', 0, $4, $5, $6, $7, $8, $9, $10, $10, $11) \
                 ON CONFLICT (run_id) DO NOTHING",
                id,
                &start.cart_id,
                &start.sequence_id,
                start.steps.len() as i32,
                Json(&start.steps),
                next_due_at,
                &start.email_hash,
                &start.phone_hash,
                start.abandoned_at,
                at,
                position
            )?;
            queue(
                tx,
                id,
                &start.steps,
                (1, 1),
                "queued",
                Some(next_due_at),
                at,
            )
            .await?;
        }
        RunEvent::Claimed {
            step, attempt, at, ..
        } => {
            exec_tx!(
                tx,
                "UPDATE recovery_runs SET status = 'running', claimed_at = $2, updated_at = $2, \
                 last_position = $3 WHERE run_id = $1 AND last_position < $3",
                id,
                at,
                position
            )?;
            notification(tx, id, step, attempt, "attempted", None, at).await?;
        }
        RunEvent::Dispatched {
            step,
            attempt,
            message_key,
            channel,
            links,
            coupon,
            next_due_at,
            at,
            ..
        } => {
            let channel = channel.as_str();
            let run: Option<(String, Option<String>, Option<String>)> = fetch_optional_tx!(
                tx,
                (String, Option<String>, Option<String>),
                "SELECT cart_id, email_hash, phone_hash FROM recovery_runs WHERE run_id = $1",
                id
            )?;
            if let Some((cart_id, email_hash, phone_hash)) = run {
                let recipient = if channel == "sms" {
                    phone_hash
                } else {
                    email_hash.clone()
                };
                feed::row(
                    tx,
                    position,
                    "send",
                    Some(id),
                    Some(&message_key),
                    Some(channel),
                    recipient.as_deref(),
                    None,
                    at,
                )
                .await?;
                for (purpose, hash) in [
                    ("restore", &links.restore),
                    ("unsubscribe", &links.unsubscribe),
                    ("open", &links.open),
                ] {
                    let Some(hash) = hash else { continue };
                    exec_tx!(
                        tx,
                        "INSERT INTO recovery_links (token_hash, purpose, run_id, message_key, \
                         cart_id, channel, recipient_hash, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (token_hash) DO NOTHING",
                        hash,
                        purpose,
                        id,
                        &message_key,
                        &cart_id,
                        channel,
                        &recipient,
                        at
                    )?;
                }
                if let Some(c) = &coupon {
                    // A coupon offered again (one active coupon per cart) is already here.
                    exec_tx!(
                        tx,
                        "INSERT INTO recovery_coupons (code, cart_id, run_id, message_key, email_hash, \
                         kind, amount, currency, status, issued_at, expires_at, store_id, last_position) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $11, $12) \
                         ON CONFLICT (code) DO NOTHING",
                        &c.code,
                        &cart_id,
                        id,
                        &message_key,
                        &email_hash,
                        c.kind.as_str(),
                        c.amount,
                        &c.currency,
                        at,
                        c.expires_at,
                        c.store_id.map(|i| i as i64),
                        position
                    )?;
                }
            }
            exec_tx!(
                tx,
                "UPDATE recovery_runs SET status = 'pending', current_step = $2, next_due_at = $3, \
                 claimed_at = NULL, last_sent_at = $4, updated_at = $4, last_position = $5 \
                 WHERE run_id = $1 AND last_position < $5",
                id,
                step as i32,
                next_due_at,
                at,
                position
            )?;
            notification(tx, id, step, attempt, "sent", None, at).await?;
            if next_due_at.is_some() {
                let steps = steps_of(tx, id).await?;
                queue(tx, id, &steps, (step + 1, 1), "queued", next_due_at, at).await?;
            }
        }
        RunEvent::Failed {
            step,
            attempt,
            error,
            retry_at,
            next_due_at,
            at,
            ..
        } => {
            let done = if retry_at.is_some() { step - 1 } else { step };
            exec_tx!(
                tx,
                "UPDATE recovery_runs SET status = 'pending', current_step = $2, next_due_at = $3, \
                 claimed_at = NULL, updated_at = $4, last_position = $5 \
                 WHERE run_id = $1 AND last_position < $5",
                id,
                done as i32,
                next_due_at,
                at,
                position
            )?;
            notification(tx, id, step, attempt, "failed", Some(&error), at).await?;
            let steps = steps_of(tx, id).await?;
            if retry_at.is_some() {
                queue(
                    tx,
                    id,
                    &steps,
                    (step, attempt + 1),
                    "retry_queued",
                    retry_at,
                    at,
                )
                .await?;
            } else if next_due_at.is_some() {
                queue(tx, id, &steps, (step + 1, 1), "queued", next_due_at, at).await?;
            }
        }
        RunEvent::Converted {
            order_id,
            revenue,
            at,
        } => {
            exec_tx!(
                tx,
                "UPDATE recovery_runs SET status = 'converted', stop_reason = NULL, \
                 next_due_at = NULL, claimed_at = NULL, converted_at = $2, order_id = $3, \
                 revenue_recovered = $4, updated_at = $2, last_position = $5 \
                 WHERE run_id = $1 AND last_position < $5",
                id,
                at,
                order_id,
                revenue.unwrap_or(0),
                position
            )?;
            cancel_queued(tx, id, at).await?;
        }
        RunEvent::ConversionReversed { at, .. } => {
            // The order was cancelled, refunded or failed: its revenue is no longer recovered.
            exec_tx!(
                tx,
                "UPDATE recovery_runs SET status = 'stopped', stop_reason = $2, \
                 revenue_recovered = 0, updated_at = $3, last_position = $4 \
                 WHERE run_id = $1 AND last_position < $4",
                id,
                ocart_domain::recovery::StopReason::OrderReversed.as_str(),
                at,
                position
            )?;
        }
        RunEvent::Stopped { reason, at } => {
            exec_tx!(
                tx,
                "UPDATE recovery_runs SET status = 'stopped', stop_reason = $2, next_due_at = NULL, \
                 claimed_at = NULL, updated_at = $3, last_position = $4 \
                 WHERE run_id = $1 AND last_position < $4",
                id,
                reason.as_str(),
                at,
                position
            )?;
            cancel_queued(tx, id, at).await?;
        }
        RunEvent::DeliveryReported {
            message_key,
            report,
            at,
        } => {
            let (channel, recipient) = message_target(tx, id, &message_key).await?;
            feed::row(
                tx,
                position,
                report.kind.as_str(),
                Some(id),
                Some(&message_key),
                channel.as_deref(),
                recipient.as_deref(),
                report.detail.as_deref(),
                at,
            )
            .await?;
            if report.kind == ocart_domain::recovery::DeliveryKind::Delivered {
                exec_tx!(
                    tx,
                    "UPDATE recovery_notifications SET status = 'delivered', updated_at = $3 \
                     WHERE run_id = $1 AND message_key = $2 AND status = 'sent'",
                    id,
                    &message_key,
                    at
                )?;
            }
        }
        RunEvent::CouponExpired { code, .. } => {
            exec_tx!(
                tx,
                "UPDATE recovery_coupons SET status = 'expired', last_position = $2 \
                 WHERE code = $1 AND status = 'active'",
                &code,
                position
            )?;
        }
        RunEvent::RestoreClicked {
            message_key,
            outcome,
            at,
        } => {
            let reason = match &outcome {
                RestoreOutcome::Failed { reason } => Some(reason.as_str()),
                _ => None,
            };
            // A restore link is the message's tracked click.
            let (channel, recipient) = message_target(tx, id, &message_key).await?;
            feed::row(
                tx,
                position,
                "click",
                Some(id),
                Some(&message_key),
                channel.as_deref(),
                recipient.as_deref(),
                Some(outcome.as_str()),
                at,
            )
            .await?;
            exec_tx!(
                tx,
                "INSERT INTO recovery_restores (position, run_id, cart_id, message_key, outcome, \
                 reason, clicked_at) SELECT $1, run_id, cart_id, $3, $4, $5, $6 \
                 FROM recovery_runs WHERE run_id = $2 ON CONFLICT (position) DO NOTHING",
                position,
                id,
                &message_key,
                outcome.as_str(),
                reason,
                at
            )?;
        }
    }
    Ok(())
}
