use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ocart_domain::offer::{BumpEvent, BumpLine, OfferEvent};
use ocart_domain::order::OrderEvent;
use serde_json::Value;
use sqlx::types::Json;

use crate::commands::decode_event;
use crate::db::Tx;
use crate::runner::Projector;
use crate::store::StoredEvent;
use crate::{exec_tx, exec_values_tx};

/// Builds `offers` (bumps, upsells and downsells as defined) and `offer_events` (the facts the
/// offer reports count: bumps shown, accepted and declined, upsells shown, charged, accepted,
/// declined and refunded, and the revenue of paid orders' offer lines). Each fact has a natural
/// key, so one stated twice counts once. The upsell events are read by field name, not by
/// their type, so this projector does not depend on the upsell aggregate.
pub struct OffersProjector;

#[async_trait]
impl Projector for OffersProjector {
    fn name(&self) -> &'static str {
        "offers"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["offers", "offer_events"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut pending = Pending::default();
        for event in events {
            match event.aggregate_type.as_str() {
                "offer" => offer(tx, event).await?,
                "bump" => bump(&mut pending, event)?,
                "order" if event.event_type == "order/recorded" => order(&mut pending, event)?,
                _ if event.event_type.starts_with("upsell/") => upsell(&mut pending, event)?,
                _ => {}
            }
        }
        pending.flush(tx).await
    }
}

async fn offer(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let id = event.aggregate_id.as_str();
    let position = event.global_position;
    match decode_event::<OfferEvent>(&event.event_type, &event.payload)? {
        OfferEvent::Created { definition, at } | OfferEvent::Updated { definition, at } => {
            let product_id = match &definition.product.product_id {
                ocart_domain::ProductId::Number(n) => n.to_string(),
                ocart_domain::ProductId::Text(s) => s.clone(),
            };
            exec_tx!(
                tx,
                "INSERT INTO offers (id, kind, name, status, currency, product_id, product, pricing, \
                 targeting, display, page_template, created_at, updated_at, last_position) \
                 VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9, $10, $11, $11, $12) \
                 ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name, \
                 currency = excluded.currency, product_id = excluded.product_id, \
                 product = excluded.product, pricing = excluded.pricing, \
                 targeting = excluded.targeting, display = excluded.display, \
                 page_template = excluded.page_template, updated_at = excluded.updated_at, \
                 last_position = excluded.last_position \
                 WHERE offers.last_position < excluded.last_position",
                id,
                definition.kind.as_str(),
                &definition.name,
                definition.currency.as_str(),
                product_id,
                Json(serde_json::to_value(&definition.product)?),
                Json(serde_json::to_value(&definition.pricing)?),
                Json(serde_json::to_value(&definition.targeting)?),
                Json(serde_json::to_value(&definition.display)?),
                &definition.page_template,
                at,
                position
            )?;
        }
        OfferEvent::Archived { at } => {
            exec_tx!(
                tx,
                "UPDATE offers SET status = 'archived', updated_at = $2, last_position = $3 \
                 WHERE id = $1 AND last_position < $3",
                id,
                at,
                position
            )?;
        }
    }
    Ok(())
}

/// One row of `offer_events`.
struct Fact<'a> {
    offer_id: &'a str,
    kind: &'static str,
    cart_id: Option<&'a str>,
    order_id: Option<&'a str>,
    acceptance_id: Option<&'a str>,
    amount: Option<i64>,
    currency: Option<&'a str>,
    at: DateTime<Utc>,
    key: String,
}

/// The facts of a batch of events, inserted in multi-row statements when the batch ends
/// (nothing here reads `offer_events`): in order, so the first fact with a key wins as with one
/// insert each.
#[derive(Default)]
struct Pending {
    rows: Vec<PendingFact>,
}

struct PendingFact {
    position: i64,
    offer_id: String,
    kind: &'static str,
    cart_id: Option<String>,
    order_id: Option<String>,
    acceptance_id: Option<String>,
    amount: Option<i64>,
    currency: Option<String>,
    at: DateTime<Utc>,
    key: String,
}

impl Pending {
    fn record(&mut self, position: i64, fact: Fact<'_>) {
        self.rows.push(PendingFact {
            position,
            offer_id: fact.offer_id.to_owned(),
            kind: fact.kind,
            cart_id: fact.cart_id.map(str::to_owned),
            order_id: fact.order_id.map(str::to_owned),
            acceptance_id: fact.acceptance_id.map(str::to_owned),
            amount: fact.amount,
            currency: fact.currency.map(str::to_owned),
            at: fact.at,
            key: fact.key,
        });
    }

    async fn flush(&mut self, tx: &mut Tx) -> anyhow::Result<()> {
        exec_values_tx!(
            tx,
            "INSERT INTO offer_events (id, offer_id, kind, cart_id, order_id, acceptance_id, \
                 amount, currency, at, idempotency_key) VALUES",
            10,
            "ON CONFLICT DO NOTHING",
            self.rows,
            |query, r| query
                .bind(r.position)
                .bind(&r.offer_id)
                .bind(r.kind)
                .bind(&r.cart_id)
                .bind(&r.order_id)
                .bind(&r.acceptance_id)
                .bind(r.amount)
                .bind(&r.currency)
                .bind(r.at)
                .bind(&r.key)
        )?;
        self.rows.clear();
        Ok(())
    }
}

fn bump(pending: &mut Pending, event: &StoredEvent) -> anyhow::Result<()> {
    let (kind, line, at): (&'static str, BumpLine, _) =
        match decode_event::<BumpEvent>(&event.event_type, &event.payload)? {
            BumpEvent::Shown { line, at } => ("shown", line, at),
            BumpEvent::Accepted { line, at } => ("accepted", line, at),
            BumpEvent::Declined { line, at } => ("declined", line, at),
        };
    let key = format!("bump/{kind}:{}:{}", line.offer_id, line.cart_id);
    pending.record(
        event.global_position,
        Fact {
            offer_id: &line.offer_id,
            kind,
            cart_id: Some(&line.cart_id),
            order_id: None,
            acceptance_id: None,
            amount: Some(line.price),
            currency: Some(&line.currency),
            at,
            key,
        },
    );
    Ok(())
}

fn order(pending: &mut Pending, event: &StoredEvent) -> anyhow::Result<()> {
    let OrderEvent::Recorded { facts, at, .. } =
        decode_event::<OrderEvent>(&event.event_type, &event.payload)?
    else {
        return Ok(());
    };
    if !facts.paid || facts.offer_lines.is_empty() {
        return Ok(());
    }
    // One revenue fact per offer: the order's lines of that offer, summed.
    let mut per_offer: Vec<(&str, i64)> = Vec::new();
    for line in &facts.offer_lines {
        match per_offer.iter_mut().find(|(id, _)| *id == line.offer_id) {
            Some((_, total)) => *total = total.saturating_add(line.total),
            None => per_offer.push((&line.offer_id, line.total)),
        }
    }
    for (offer_id, total) in per_offer {
        pending.record(
            event.global_position,
            Fact {
                offer_id,
                kind: "revenue",
                cart_id: None,
                order_id: Some(&facts.order_id),
                acceptance_id: None,
                amount: Some(total),
                currency: Some(facts.currency.as_str()),
                at,
                key: format!("revenue:{}:{offer_id}", facts.order_id),
            },
        );
    }
    Ok(())
}

/// The upsell events, by field name: `upsell/shown` → shown (the hosted page rendered the
/// offer: once per parent order and step), `upsell/charge_succeeded` → charged,
/// `upsell/accepted` → accepted (its amount is revenue), `upsell/declined` → declined,
/// `upsell/refunded` → refunded. Any other (`upsell/before_charge`, …) counts nothing.
fn upsell(pending: &mut Pending, event: &StoredEvent) -> anyhow::Result<()> {
    let kind = match event.event_type.as_str() {
        "upsell/shown" => "shown",
        "upsell/charge_succeeded" => "charged",
        "upsell/accepted" => "accepted",
        "upsell/declined" => "declined",
        "upsell/refunded" => "refunded",
        _ => return Ok(()),
    };
    // The stored payload is the event's data, without its type tag.
    let data: Value = serde_json::from_str(event.payload.get())?;
    let text = |name: &str| data.get(name).and_then(Value::as_str);
    let (Some(offer_id), Some(acceptance_id)) = (text("offer_id"), text("acceptance_id")) else {
        anyhow::bail!(
            "{} at {} lacks offer_id or acceptance_id",
            event.event_type,
            event.global_position
        );
    };
    let at = match text("at") {
        Some(at) => DateTime::parse_from_rfc3339(at)?.with_timezone(&Utc),
        None => event.recorded_at,
    };
    let key = match kind {
        "refunded" => format!("refunded:{}", text("refund_id").unwrap_or(acceptance_id)),
        _ => format!("{}:{acceptance_id}", event.event_type),
    };
    let order_id = text("child_order_id").or_else(|| text("parent_order_id"));
    pending.record(
        event.global_position,
        Fact {
            offer_id,
            kind,
            cart_id: None,
            order_id,
            acceptance_id: Some(acceptance_id),
            amount: data.get("amount").and_then(Value::as_i64),
            currency: text("currency"),
            at,
            key,
        },
    );
    Ok(())
}
