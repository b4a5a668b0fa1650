use async_trait::async_trait;
use ocart_domain::order::OrderEvent;

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Builds `orders`: the store orders as signalled, with the cart each converted. (A recovery
/// coupon an order spends is marked used by the `recovery_runs` projector, which owns
/// `recovery_coupons`.)
pub struct OrdersProjector;

#[async_trait]
impl Projector for OrdersProjector {
    fn name(&self) -> &'static str {
        "orders"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["orders"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            if event.aggregate_type == "order" {
                order(tx, event).await?;
            }
        }
        Ok(())
    }
}

async fn order(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let position = event.global_position;
    match decode_event::<OrderEvent>(&event.event_type, &event.payload)? {
        OrderEvent::Recorded {
            facts,
            attribution,
            at,
        } => {
            exec_tx!(
                tx,
                "INSERT INTO orders (order_id, status, paid, payment_method, currency, total_minor, \
                 email_hash, placed_at, source, cart_id, matched_by, outcome, created_at, updated_at, \
                 last_position, order_key) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13, $14, $15) \
                 ON CONFLICT (order_id) DO NOTHING",
                &facts.order_id,
                &facts.status,
                facts.paid,
                &facts.payment_method,
                facts.currency.as_str(),
                facts.total,
                &facts.email_hash,
                facts.placed_at,
                &facts.source,
                attribution.as_ref().map(|a| a.cart_id.as_str()),
                attribution.as_ref().map(|a| a.matched_by.as_str()),
                attribution.as_ref().map(|a| a.outcome.as_str()),
                at,
                position,
                &event.aggregate_id
            )?;
        }
        OrderEvent::StatusChanged {
            status,
            paid,
            total,
            attribution,
            at,
            ..
        } => {
            exec_tx!(
                tx,
                "UPDATE orders SET status = $2, paid = $3, total_minor = $4, \
                 cart_id = COALESCE($5, cart_id), matched_by = COALESCE($6, matched_by), \
                 outcome = COALESCE($7, outcome), updated_at = $8, last_position = $9 \
                 WHERE order_key = $1 AND last_position < $9",
                &event.aggregate_id,
                &status,
                paid,
                total,
                attribution.as_ref().map(|a| a.cart_id.as_str()),
                attribution.as_ref().map(|a| a.matched_by.as_str()),
                attribution.as_ref().map(|a| a.outcome.as_str()),
                at,
                position
            )?;
        }
    }
    Ok(())
}
