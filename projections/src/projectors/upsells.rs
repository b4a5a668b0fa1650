use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ocart_domain::upsell::{AcceptanceStatus, UpsellEvent, UpsellKind};

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Builds `upsell_acceptances` (one row per acceptance: the decision, the charge, the child
/// order, what was refunded) and `upsell_refunds` (one row per refund). Each event is applied
/// once: the acceptance row's `last_position` guards every update, and a refund row is written
/// only when the guarded acceptance update went through.
pub struct UpsellsProjector;

#[async_trait]
impl Projector for UpsellsProjector {
    fn name(&self) -> &'static str {
        "upsell_acceptances"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["upsell_acceptances", "upsell_refunds"]
    }

    fn indexes(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "upsell_acceptances_status_updated",
                "CREATE INDEX IF NOT EXISTS upsell_acceptances_status_updated \
                 ON upsell_acceptances (status, updated_at)",
            ),
            (
                "upsell_acceptances_parent",
                "CREATE INDEX IF NOT EXISTS upsell_acceptances_parent \
                 ON upsell_acceptances (parent_order_id)",
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            if event.aggregate_type == "upsell_acceptance" {
                acceptance(tx, event).await?;
            }
        }
        Ok(())
    }
}

fn kind_str(kind: UpsellKind) -> &'static str {
    match kind {
        UpsellKind::Upsell => "upsell",
        UpsellKind::Downsell => "downsell",
    }
}

/// Moves the acceptance to `status` (guarded by its position); answers whether it moved.
async fn set_status(
    tx: &mut Tx,
    id: &str,
    status: AcceptanceStatus,
    charge_ref: Option<&str>,
    at: DateTime<Utc>,
    position: i64,
) -> anyhow::Result<u64> {
    Ok(exec_tx!(
        tx,
        "UPDATE upsell_acceptances SET status = $2, shown_status = $3, \
         charge_ref = COALESCE($4, charge_ref), updated_at = $5, last_position = $6 \
         WHERE acceptance_id = $1 AND last_position < $6",
        id,
        status.as_str(),
        status.shown(),
        charge_ref,
        at,
        position
    )?)
}

async fn acceptance(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    use AcceptanceStatus as S;
    let id = event.aggregate_id.as_str();
    let position = event.global_position;
    match decode_event::<UpsellEvent>(&event.event_type, &event.payload)? {
        UpsellEvent::BeforeCharge {
            offer_id,
            kind,
            funnel_id,
            step,
            parent_order_id,
            amount,
            currency,
            gateway,
            at,
            ..
        } => {
            exec_tx!(
                tx,
                "INSERT INTO upsell_acceptances (acceptance_id, offer_id, kind, funnel_id, step, \
                 parent_order_id, status, shown_status, amount, currency, gateway, charge_ref, \
                 child_order_id, refunded_amount, refunds_pending, unknown_attempts, created_at, \
                 updated_at, last_position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 NULL, NULL, 0, 0, 0, $12, $12, $13) ON CONFLICT (acceptance_id) DO NOTHING",
                id,
                &offer_id,
                kind_str(kind),
                &funnel_id,
                &step,
                &parent_order_id,
                S::Charging.as_str(),
                S::Charging.shown(),
                amount,
                currency.as_str(),
                &gateway,
                at,
                position
            )?;
        }
        UpsellEvent::Declined {
            offer_id,
            kind,
            funnel_id,
            step,
            parent_order_id,
            at,
            ..
        } => {
            exec_tx!(
                tx,
                "INSERT INTO upsell_acceptances (acceptance_id, offer_id, kind, funnel_id, step, \
                 parent_order_id, status, shown_status, amount, currency, gateway, charge_ref, \
                 child_order_id, refunded_amount, refunds_pending, unknown_attempts, created_at, \
                 updated_at, last_position) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, NULL, \
                 NULL, NULL, NULL, 0, 0, 0, $9, $9, $10) ON CONFLICT (acceptance_id) DO NOTHING",
                id,
                &offer_id,
                kind_str(kind),
                &funnel_id,
                &step,
                &parent_order_id,
                S::DeclinedByShopper.as_str(),
                S::DeclinedByShopper.shown(),
                at,
                position
            )?;
        }
        UpsellEvent::ChargeSucceeded { charge_ref, at, .. } => {
            set_status(tx, id, S::Succeeded, Some(&charge_ref), at, position).await?;
        }
        UpsellEvent::ChargeRequiresAction { charge_ref, at, .. } => {
            set_status(tx, id, S::RequiresAction, Some(&charge_ref), at, position).await?;
        }
        UpsellEvent::ChargeDeclined { charge_ref, at, .. } => {
            set_status(tx, id, S::Declined, charge_ref.as_deref(), at, position).await?;
        }
        UpsellEvent::ChargeUnknown {
            charge_ref,
            attempt,
            at,
            ..
        } => {
            // Waiting for the shopper stays waiting (the aggregate's rule).
            exec_tx!(
                tx,
                "UPDATE upsell_acceptances SET \
                 status = CASE WHEN status = 'requires_action' THEN status ELSE 'unknown' END, \
                 shown_status = CASE WHEN status = 'requires_action' THEN shown_status \
                 ELSE 'processing' END, \
                 charge_ref = COALESCE($2, charge_ref), unknown_attempts = $3, updated_at = $4, \
                 last_position = $5 WHERE acceptance_id = $1 AND last_position < $5",
                id,
                charge_ref.as_deref(),
                i64::from(attempt),
                at,
                position
            )?;
        }
        UpsellEvent::Accepted {
            child_order_id,
            charge_ref,
            at,
            ..
        } => {
            exec_tx!(
                tx,
                "UPDATE upsell_acceptances SET status = $2, shown_status = $3, \
                 child_order_id = $4, charge_ref = $5, updated_at = $6, last_position = $7 \
                 WHERE acceptance_id = $1 AND last_position < $7",
                id,
                S::Accepted.as_str(),
                S::Accepted.shown(),
                &child_order_id,
                &charge_ref,
                at,
                position
            )?;
        }
        UpsellEvent::RefundRequested {
            refund_id,
            amount,
            reason,
            at,
            ..
        } => {
            let moved = exec_tx!(
                tx,
                "UPDATE upsell_acceptances SET refunds_pending = refunds_pending + 1, \
                 updated_at = $2, last_position = $3 \
                 WHERE acceptance_id = $1 AND last_position < $3",
                id,
                at,
                position
            )?;
            if moved > 0 {
                exec_tx!(
                    tx,
                    "INSERT INTO upsell_refunds (acceptance_id, refund_id, amount, status, reason, \
                     refund_ref, store_refund_id, created_at, updated_at) \
                     VALUES ($1, $2, $3, 'requested', $4, NULL, NULL, $5, $5) \
                     ON CONFLICT (acceptance_id, refund_id) DO NOTHING",
                    id,
                    &refund_id,
                    amount,
                    reason.as_deref(),
                    at
                )?;
            }
        }
        UpsellEvent::Refunded {
            refund_id,
            refund_ref,
            amount,
            at,
            ..
        } => {
            let moved = exec_tx!(
                tx,
                "UPDATE upsell_acceptances SET refunds_pending = refunds_pending - 1, \
                 refunded_amount = refunded_amount + $2, updated_at = $3, last_position = $4 \
                 WHERE acceptance_id = $1 AND last_position < $4",
                id,
                amount,
                at,
                position
            )?;
            if moved > 0 {
                exec_tx!(
                    tx,
                    "UPDATE upsell_refunds SET status = 'refunded', refund_ref = $3, updated_at = $4 \
                     WHERE acceptance_id = $1 AND refund_id = $2",
                    id,
                    &refund_id,
                    &refund_ref,
                    at
                )?;
            }
        }
        UpsellEvent::RefundFailed { refund_id, at, .. } => {
            let moved = exec_tx!(
                tx,
                "UPDATE upsell_acceptances SET refunds_pending = refunds_pending - 1, \
                 updated_at = $2, last_position = $3 \
                 WHERE acceptance_id = $1 AND last_position < $3",
                id,
                at,
                position
            )?;
            if moved > 0 {
                exec_tx!(
                    tx,
                    "UPDATE upsell_refunds SET status = 'failed', updated_at = $3 \
                     WHERE acceptance_id = $1 AND refund_id = $2",
                    id,
                    &refund_id,
                    at
                )?;
            }
        }
        UpsellEvent::StoreRefundRecorded {
            refund_id,
            store_refund_id,
            at,
            ..
        } => {
            let moved = exec_tx!(
                tx,
                "UPDATE upsell_acceptances SET updated_at = $2, last_position = $3 \
                 WHERE acceptance_id = $1 AND last_position < $3",
                id,
                at,
                position
            )?;
            if moved > 0 {
                exec_tx!(
                    tx,
                    "UPDATE upsell_refunds SET store_refund_id = $3, updated_at = $4 \
                     WHERE acceptance_id = $1 AND refund_id = $2",
                    id,
                    &refund_id,
                    &store_refund_id,
                    at
                )?;
            }
        }
    }
    Ok(())
}
