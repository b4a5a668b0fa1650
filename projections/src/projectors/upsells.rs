use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ocart_domain::upsell::{AcceptanceStatus, UpsellEvent, UpsellKind};

use crate::commands::decode_event;
use crate::db::{Layered, Tx};
use crate::runner::Projector;
use crate::store::StoredEvent;
use crate::{exec_tx, exec_values_tx};

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

    /// The decisions and the status moves of a batch go in a few multi-row statements
    /// ([`Layered`]); the rarer writes (an unknown outcome, refunds) run one by one, after the
    /// writes before them.
    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut rows = Layered::default();
        for event in events {
            if event.aggregate_type != "upsell_acceptance" {
                continue;
            }
            let decoded = decode_event::<UpsellEvent>(&event.event_type, &event.payload)?;
            match write_of(event, decoded) {
                Ok(write) => rows.push(&event.aggregate_id, write),
                Err(other) => {
                    flush(tx, &mut rows).await?;
                    acceptance(tx, event, *other).await?;
                }
            }
        }
        flush(tx, &mut rows).await
    }
}

/// A write of `upsell_acceptances` that may share a statement with other rows'.
enum Write {
    /// A decision: the row, as accepted (charging) or declined by the shopper.
    Insert(NewRow),
    /// A status move (a charge's answer, the store order written), guarded by its position.
    Move(StatusMove),
}

struct NewRow {
    id: String,
    offer_id: String,
    kind: &'static str,
    funnel_id: String,
    step: String,
    parent_order_id: String,
    status: AcceptanceStatus,
    amount: i64,
    currency: Option<String>,
    gateway: Option<String>,
    at: DateTime<Utc>,
    position: i64,
}

struct StatusMove {
    id: String,
    status: AcceptanceStatus,
    /// Kept when `None`.
    charge_ref: Option<String>,
    /// Kept when `None`.
    child_order_id: Option<String>,
    at: DateTime<Utc>,
    position: i64,
}

/// The batched write `event` makes, or the event back when it is written alone.
fn write_of(event: &StoredEvent, decoded: UpsellEvent) -> Result<Write, Box<UpsellEvent>> {
    use AcceptanceStatus as S;
    let id = event.aggregate_id.clone();
    let position = event.global_position;
    let moved = |status, charge_ref, child_order_id, at| {
        Write::Move(StatusMove {
            id: id.clone(),
            status,
            charge_ref,
            child_order_id,
            at,
            position,
        })
    };
    Ok(match decoded {
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
        } => Write::Insert(NewRow {
            id,
            offer_id,
            kind: kind_str(kind),
            funnel_id,
            step,
            parent_order_id,
            status: S::Charging,
            amount,
            currency: Some(currency.as_str().to_owned()),
            gateway: Some(gateway),
            at,
            position,
        }),
        UpsellEvent::Declined {
            offer_id,
            kind,
            funnel_id,
            step,
            parent_order_id,
            at,
            ..
        } => Write::Insert(NewRow {
            id,
            offer_id,
            kind: kind_str(kind),
            funnel_id,
            step,
            parent_order_id,
            status: S::DeclinedByShopper,
            amount: 0,
            currency: None,
            gateway: None,
            at,
            position,
        }),
        UpsellEvent::ChargeSucceeded { charge_ref, at, .. } => {
            moved(S::Succeeded, Some(charge_ref), None, at)
        }
        UpsellEvent::ChargeRequiresAction { charge_ref, at, .. } => {
            moved(S::RequiresAction, Some(charge_ref), None, at)
        }
        UpsellEvent::ChargeDeclined { charge_ref, at, .. } => {
            moved(S::Declined, charge_ref, None, at)
        }
        UpsellEvent::Accepted {
            child_order_id,
            charge_ref,
            at,
            ..
        } => moved(S::Accepted, Some(charge_ref), Some(child_order_id), at),
        other => return Err(Box::new(other)),
    })
}

/// Runs the writes gathered so far, layer by layer.
async fn flush(tx: &mut Tx, rows: &mut Layered<Write>) -> anyhow::Result<()> {
    for layer in rows.take() {
        let (mut inserts, mut moves) = (Vec::new(), Vec::new());
        for write in layer {
            match write {
                Write::Insert(row) => inserts.push(row),
                Write::Move(moved) => moves.push(moved),
            }
        }
        exec_values_tx!(
            tx,
            "INSERT INTO upsell_acceptances (acceptance_id, offer_id, kind, funnel_id, step, \
                 parent_order_id, status, shown_status, amount, currency, gateway, charge_ref, \
                 child_order_id, refunded_amount, refunds_pending, unknown_attempts, created_at, \
                 updated_at, last_position) VALUES",
            19,
            "ON CONFLICT (acceptance_id) DO NOTHING",
            inserts,
            |query, r| query
                .bind(&r.id)
                .bind(&r.offer_id)
                .bind(r.kind)
                .bind(&r.funnel_id)
                .bind(&r.step)
                .bind(&r.parent_order_id)
                .bind(r.status.as_str())
                .bind(r.status.shown())
                .bind(r.amount)
                .bind(&r.currency)
                .bind(&r.gateway)
                .bind(None::<&str>)
                .bind(None::<&str>)
                .bind(0i64)
                .bind(0i32)
                .bind(0i32)
                .bind(r.at)
                .bind(r.at)
                .bind(r.position)
        )?;
        exec_values_tx!(
            tx,
            "WITH v (k_id, k_status, k_shown, k_ref, k_child, k_at, k_position) AS (VALUES",
            7,
            ") UPDATE upsell_acceptances SET status = v.k_status, shown_status = v.k_shown, \
                 charge_ref = COALESCE(v.k_ref, charge_ref), \
                 child_order_id = COALESCE(v.k_child, child_order_id), updated_at = v.k_at, \
                 last_position = v.k_position FROM v \
                 WHERE acceptance_id = v.k_id AND last_position < v.k_position",
            moves,
            |query, r| query
                .bind(&r.id)
                .bind(r.status.as_str())
                .bind(r.status.shown())
                .bind(&r.charge_ref)
                .bind(&r.child_order_id)
                .bind(r.at)
                .bind(r.position)
        )?;
    }
    Ok(())
}

fn kind_str(kind: UpsellKind) -> &'static str {
    match kind {
        UpsellKind::Upsell => "upsell",
        UpsellKind::Downsell => "downsell",
    }
}

/// Writes an event that goes alone (an unknown outcome, the refunds); the batched ones are
/// [`write_of`]'s.
async fn acceptance(tx: &mut Tx, event: &StoredEvent, decoded: UpsellEvent) -> anyhow::Result<()> {
    let id = event.aggregate_id.as_str();
    let position = event.global_position;
    match decoded {
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
        // Batched (write_of): never written alone.
        UpsellEvent::BeforeCharge { .. }
        | UpsellEvent::Declined { .. }
        | UpsellEvent::ChargeSucceeded { .. }
        | UpsellEvent::ChargeRequiresAction { .. }
        | UpsellEvent::ChargeDeclined { .. }
        | UpsellEvent::Accepted { .. } => {}
    }
    Ok(())
}
