use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ocart_domain::funnel::{FunnelDefinition, FunnelEvent};
use ocart_domain::offer::{BumpEvent, BumpLine};
use ocart_domain::order::OrderEvent;
use ocart_domain::upsell::{UpsellEvent, ViewEvent};

use crate::commands::decode_event;
use crate::db::{Layered, Tx};
use crate::runner::Projector;
use crate::store::StoredEvent;
use crate::{exec_tx, exec_values_tx, fetch_optional_tx};

/// Builds the funnel report's tables: `funnel_report_steps` (its own copy of every funnel's
/// steps, from `funnel/created` and `funnel/updated`), `funnel_report_facts` (per funnel and
/// step: visits, accepts, declines, revenue and refunds, each fact under its natural key) and
/// `funnel_report_orders` (the orders a funnel may be credited with, and the funnel they are).
///
/// What counts:
/// - a bump step's visit, accept and decline: `bump/shown`, `bump/accepted`, `bump/declined`
///   of its offer, for every funnel whose current definition has that offer as a bump step;
///   its revenue: the offer's lines of an order recorded paid;
/// - an upsell or downsell step's visit: `upsell/shown` (the hosted page rendered the offer,
///   once per parent order and step); its accept: `upsell/accepted` (charged and written to
///   the store), whose amount is its revenue; its decline: `upsell/declined`; its refunds:
///   `upsell/refunded`;
/// - an order belongs to the first funnel that touched it in the log: its bump line of one of
///   the funnel's bump steps, or an upsell step of the funnel shown or decided with it as the
///   parent order. Only orders that carried an offer line or a saved payment are kept (no other
///   can be touched). Its value is its total plus the funnel's upsells accepted on it in its
///   currency; it is "with offers" when it carried one of the funnel's bump lines or an upsell
///   was accepted on it.
///
/// It remembers the step of the acceptances it has seen charged (`upsell/before_charge`), so
/// their `upsell/accepted` needs no read of the facts to find it (bounded; a forgotten one is
/// read back).
#[derive(Default)]
pub struct FunnelReportsProjector {
    steps: std::sync::Mutex<std::collections::HashMap<String, StepOf>>,
}

/// Acceptances whose step is remembered before the memory starts over.
const REMEMBERED_STEPS: usize = 100_000;

impl FunnelReportsProjector {
    fn remember(&self, acceptance_id: &str, of: StepOf) {
        let mut steps = self.steps.lock().expect("funnel report steps");
        if steps.len() >= REMEMBERED_STEPS {
            steps.clear();
        }
        steps.insert(acceptance_id.to_owned(), of);
    }

    fn remembered(&self, acceptance_id: &str) -> Option<StepOf> {
        self.steps
            .lock()
            .expect("funnel report steps")
            .get(acceptance_id)
            .cloned()
    }
}

#[async_trait]
impl Projector for FunnelReportsProjector {
    fn name(&self) -> &'static str {
        "funnel_reports"
    }

    fn tables(&self) -> &'static [&'static str] {
        &[
            "funnel_report_steps",
            "funnel_report_facts",
            "funnel_report_orders",
        ]
    }

    fn indexes(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "funnel_report_steps_offer",
                "CREATE INDEX IF NOT EXISTS funnel_report_steps_offer \
                 ON funnel_report_steps (offer_id)",
            ),
            (
                "funnel_report_facts_acceptance",
                "CREATE INDEX IF NOT EXISTS funnel_report_facts_acceptance \
                 ON funnel_report_facts (acceptance_id)",
            ),
            (
                "funnel_report_facts_funnel",
                "CREATE INDEX IF NOT EXISTS funnel_report_facts_funnel \
                 ON funnel_report_facts (funnel_id, step_key, kind)",
            ),
            (
                "funnel_report_orders_funnel",
                "CREATE INDEX IF NOT EXISTS funnel_report_orders_funnel \
                 ON funnel_report_orders (funnel_id)",
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut pending = Pending::default();
        for event in events {
            match event.aggregate_type.as_str() {
                "funnel" => funnel(tx, event).await?,
                "bump" => bump(tx, &mut pending, event).await?,
                "order" => order(tx, &mut pending, event).await?,
                "upsell_view" => view(&mut pending, event)?,
                "upsell_acceptance" => acceptance(self, tx, &mut pending, event).await?,
                _ => {}
            }
        }
        pending.flush(tx).await
    }
}

async fn funnel(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let definition: FunnelDefinition =
        match decode_event::<FunnelEvent>(&event.event_type, &event.payload)? {
            FunnelEvent::Created { definition, .. } | FunnelEvent::Updated { definition, .. } => {
                definition
            }
            FunnelEvent::Activated { .. } | FunnelEvent::Archived { .. } => return Ok(()),
        };
    let slug = event.aggregate_id.as_str();
    let position = event.global_position;
    // Steps a later definition drops stay, no longer current: their facts keep their type.
    exec_tx!(
        tx,
        "UPDATE funnel_report_steps SET is_current = FALSE, last_position = $2 \
         WHERE funnel_id = $1 AND last_position < $2",
        slug,
        position
    )?;
    for step in &definition.steps {
        exec_tx!(
            tx,
            "INSERT INTO funnel_report_steps (funnel_id, step_key, position, step_type, offer_id, \
             is_current, last_position) VALUES ($1, $2, $3, $4, $5, TRUE, $6) \
             ON CONFLICT (funnel_id, step_key) DO UPDATE SET position = excluded.position, \
             step_type = excluded.step_type, offer_id = excluded.offer_id, is_current = TRUE, \
             last_position = excluded.last_position \
             WHERE funnel_report_steps.last_position <= excluded.last_position",
            slug,
            &step.key,
            i64::from(step.position),
            step.kind.as_str(),
            &step.offer_id,
            position
        )?;
    }
    Ok(())
}

/// The current bump steps of `offer_id`, as (funnel, step), by funnel then step.
async fn bump_steps(tx: &mut Tx, offer_id: &str) -> anyhow::Result<Vec<(String, String)>> {
    const SQL: &str = "SELECT funnel_id, step_key FROM funnel_report_steps \
        WHERE offer_id = $1 AND step_type = 'bump' AND is_current ORDER BY funnel_id, step_key";
    Ok(match tx {
        Tx::Pg(t) => {
            sqlx::query_as(SQL)
                .bind(offer_id)
                .fetch_all(&mut **t)
                .await?
        }
        Tx::Lite(t) => {
            sqlx::query_as(&crate::lite_sql(SQL))
                .bind(offer_id)
                .fetch_all(&mut **t)
                .await?
        }
    })
}

/// One row of `funnel_report_facts`.
struct Fact<'a> {
    funnel_id: &'a str,
    step: &'a str,
    kind: &'static str,
    order_id: Option<&'a str>,
    acceptance_id: Option<&'a str>,
    amount: Option<i64>,
    currency: Option<&'a str>,
    at: DateTime<Utc>,
    key: String,
}

/// Facts a batch of events makes, inserted in multi-row statements
/// ([`crate::db::ROWS_PER_STATEMENT`] rows each) when the batch ends, or before a read of the facts: a batch costs a statement per few
/// hundred facts instead of one per fact. In order, so the first fact with a key wins as with
/// one insert each (`ON CONFLICT DO NOTHING` skips a later row of the same statement too).
///
/// The writes of `funnel_report_orders` wait there too, by order ([`Layered`]): a batch's
/// orders, attributions and upsell totals cost a statement per kind instead of one per event.
#[derive(Default)]
struct Pending {
    rows: Vec<PendingFact>,
    orders: Layered<OrderWrite>,
}

/// A write of one `funnel_report_orders` row, each guarded by the row's `last_position`.
enum OrderWrite {
    Insert(NewOrder),
    Paid(PaidOrder),
    Attribute(Attribution),
    Upsell(UpsellTotal),
}

/// An order that could belong to a funnel, as recorded (kept if the row is there).
struct NewOrder {
    order_id: String,
    funnel_id: Option<String>,
    currency: String,
    total: i64,
    paid: bool,
    placed_at: DateTime<Utc>,
    position: i64,
}

/// Its payment and total after a status change.
struct PaidOrder {
    order_id: String,
    paid: bool,
    total: i64,
    position: i64,
}

/// Credited to a funnel, unless another touched it first.
struct Attribution {
    order_id: String,
    funnel_id: String,
    position: i64,
}

/// An accepted upsell's amount, when the order is the funnel's and in its currency.
struct UpsellTotal {
    order_id: String,
    funnel_id: String,
    currency: String,
    amount: i64,
    position: i64,
}

impl OrderWrite {
    fn order_id(&self) -> &str {
        match self {
            Self::Insert(w) => &w.order_id,
            Self::Paid(w) => &w.order_id,
            Self::Attribute(w) => &w.order_id,
            Self::Upsell(w) => &w.order_id,
        }
    }
}

/// Runs one layer of order writes: a multi-row statement per kind (every row differs).
async fn write_orders(tx: &mut Tx, layer: Vec<OrderWrite>) -> anyhow::Result<()> {
    let (mut inserts, mut paid, mut attributed, mut upsells) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for write in layer {
        match write {
            OrderWrite::Insert(w) => inserts.push(w),
            OrderWrite::Paid(w) => paid.push(w),
            OrderWrite::Attribute(w) => attributed.push(w),
            OrderWrite::Upsell(w) => upsells.push(w),
        }
    }
    exec_values_tx!(
        tx,
        "INSERT INTO funnel_report_orders (order_id, funnel_id, currency, total, paid, bump, \
             upsell_total, placed_at, last_position) VALUES",
        9,
        "ON CONFLICT (order_id) DO NOTHING",
        inserts,
        |query, w| query
            .bind(&w.order_id)
            .bind(&w.funnel_id)
            .bind(&w.currency)
            .bind(w.total)
            .bind(w.paid)
            .bind(w.funnel_id.is_some())
            .bind(0i64)
            .bind(w.placed_at)
            .bind(w.position)
    )?;
    exec_values_tx!(
        tx,
        "WITH v (k_id, k_paid, k_total, k_position) AS (VALUES",
        4,
        ") UPDATE funnel_report_orders SET paid = v.k_paid, total = v.k_total, \
             last_position = v.k_position FROM v \
             WHERE order_id = v.k_id AND last_position < v.k_position",
        paid,
        |query, w| query
            .bind(&w.order_id)
            .bind(w.paid)
            .bind(w.total)
            .bind(w.position)
    )?;
    exec_values_tx!(
        tx,
        "WITH v (k_id, k_funnel, k_position) AS (VALUES",
        3,
        ") UPDATE funnel_report_orders SET funnel_id = COALESCE(funnel_id, v.k_funnel), \
             last_position = v.k_position FROM v \
             WHERE order_id = v.k_id AND last_position < v.k_position",
        attributed,
        |query, w| query.bind(&w.order_id).bind(&w.funnel_id).bind(w.position)
    )?;
    exec_values_tx!(
        tx,
        "WITH v (k_id, k_funnel, k_currency, k_amount, k_position) AS (VALUES",
        5,
        ") UPDATE funnel_report_orders SET upsell_total = upsell_total + v.k_amount, \
             last_position = v.k_position FROM v WHERE order_id = v.k_id \
             AND funnel_id = v.k_funnel AND currency = v.k_currency \
             AND last_position < v.k_position",
        upsells,
        |query, w| query
            .bind(&w.order_id)
            .bind(&w.funnel_id)
            .bind(&w.currency)
            .bind(w.amount)
            .bind(w.position)
    )?;
    Ok(())
}

struct PendingFact {
    position: i64,
    funnel_id: String,
    step: String,
    kind: &'static str,
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
            funnel_id: fact.funnel_id.to_owned(),
            step: fact.step.to_owned(),
            kind: fact.kind,
            order_id: fact.order_id.map(str::to_owned),
            acceptance_id: fact.acceptance_id.map(str::to_owned),
            amount: fact.amount,
            currency: fact.currency.map(str::to_owned),
            at: fact.at,
            key: fact.key,
        });
    }

    fn write_order(&mut self, write: OrderWrite) {
        let key = write.order_id().to_owned();
        self.orders.push(&key, write);
    }

    async fn flush(&mut self, tx: &mut Tx) -> anyhow::Result<()> {
        for layer in self.orders.take() {
            write_orders(tx, layer).await?;
        }
        exec_values_tx!(
            tx,
            "INSERT INTO funnel_report_facts (id, funnel_id, step_key, kind, order_id, \
                 acceptance_id, amount, currency, at, idempotency_key) VALUES",
            10,
            "ON CONFLICT (idempotency_key) DO NOTHING",
            self.rows,
            |query, r| query
                .bind(r.position)
                .bind(&r.funnel_id)
                .bind(&r.step)
                .bind(r.kind)
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

async fn bump(tx: &mut Tx, pending: &mut Pending, event: &StoredEvent) -> anyhow::Result<()> {
    let (kind, line, at): (&'static str, BumpLine, _) =
        match decode_event::<BumpEvent>(&event.event_type, &event.payload)? {
            BumpEvent::Shown { line, at } => ("visit", line, at),
            BumpEvent::Accepted { line, at } => ("accepted", line, at),
            BumpEvent::Declined { line, at } => ("declined", line, at),
        };
    for (funnel_id, step) in bump_steps(tx, &line.offer_id).await? {
        let key = format!(
            "bump/{kind}:{}:{}:{funnel_id}:{step}",
            line.offer_id, line.cart_id
        );
        pending.record(
            event.global_position,
            Fact {
                funnel_id: &funnel_id,
                step: &step,
                kind,
                order_id: None,
                acceptance_id: None,
                amount: Some(line.price),
                currency: Some(&line.currency),
                at,
                key,
            },
        );
    }
    Ok(())
}

async fn order(tx: &mut Tx, pending: &mut Pending, event: &StoredEvent) -> anyhow::Result<()> {
    let position = event.global_position;
    match decode_event::<OrderEvent>(&event.event_type, &event.payload)? {
        OrderEvent::Recorded { facts, at, .. } => {
            if facts.offer_lines.is_empty() && facts.payment.is_none() {
                return Ok(());
            }
            // Per bump step of the order's offer lines: the lines' total.
            let mut per_step: Vec<(String, String, i64)> = Vec::new();
            for line in &facts.offer_lines {
                for (funnel_id, step) in bump_steps(tx, &line.offer_id).await? {
                    match per_step
                        .iter_mut()
                        .find(|(f, s, _)| *f == funnel_id && *s == step)
                    {
                        Some((_, _, total)) => {
                            *total = total
                                .checked_add(line.total)
                                .ok_or_else(|| anyhow::anyhow!("offer lines overflow"))?
                        }
                        None => per_step.push((funnel_id, step, line.total)),
                    }
                }
            }
            let funnel_id = per_step.iter().map(|(f, _, _)| f.as_str()).min();
            pending.write_order(OrderWrite::Insert(NewOrder {
                order_id: facts.order_id.clone(),
                funnel_id: funnel_id.map(str::to_owned),
                currency: facts.currency.as_str().to_owned(),
                total: facts.total,
                paid: facts.paid,
                placed_at: facts.placed_at,
                position,
            }));
            if !facts.paid {
                return Ok(());
            }
            for (funnel_id, step, total) in &per_step {
                pending.record(
                    position,
                    Fact {
                        funnel_id,
                        step,
                        kind: "revenue",
                        order_id: Some(&facts.order_id),
                        acceptance_id: None,
                        amount: Some(*total),
                        currency: Some(facts.currency.as_str()),
                        at,
                        key: format!("revenue:{}:{funnel_id}:{step}", facts.order_id),
                    },
                );
            }
        }
        OrderEvent::StatusChanged { paid, total, .. } => {
            pending.write_order(OrderWrite::Paid(PaidOrder {
                order_id: event.aggregate_id.clone(),
                paid,
                total,
                position,
            }));
        }
    }
    Ok(())
}

/// Credits the parent order to the funnel, unless another funnel touched it first.
fn attribute(pending: &mut Pending, order_id: &str, funnel_id: &str, position: i64) {
    pending.write_order(OrderWrite::Attribute(Attribution {
        order_id: order_id.to_owned(),
        funnel_id: funnel_id.to_owned(),
        position,
    }));
}

fn view(pending: &mut Pending, event: &StoredEvent) -> anyhow::Result<()> {
    let ViewEvent::Shown { step, at } =
        decode_event::<ViewEvent>(&event.event_type, &event.payload)?;
    pending.record(
        event.global_position,
        Fact {
            funnel_id: &step.funnel_id,
            step: &step.step,
            kind: "visit",
            order_id: Some(&step.parent_order_id),
            acceptance_id: Some(&step.acceptance_id),
            amount: None,
            currency: None,
            at,
            key: format!("visit:{}", event.aggregate_id),
        },
    );
    attribute(
        pending,
        &step.parent_order_id,
        &step.funnel_id,
        event.global_position,
    );
    Ok(())
}

#[derive(sqlx::FromRow, Clone)]
struct StepOf {
    funnel_id: String,
    step_key: String,
    order_id: Option<String>,
}

/// The funnel and step of an acceptance: remembered from its `upsell/before_charge`, else (the
/// memory started over, or the process did) read back from that fact, once this batch's facts
/// are written.
async fn step_of(
    projector: &FunnelReportsProjector,
    tx: &mut Tx,
    pending: &mut Pending,
    acceptance_id: &str,
) -> anyhow::Result<Option<StepOf>> {
    if let Some(of) = projector.remembered(acceptance_id) {
        return Ok(Some(of));
    }
    pending.flush(tx).await?;
    Ok(fetch_optional_tx!(
        tx,
        StepOf,
        "SELECT funnel_id, step_key, order_id FROM funnel_report_facts \
         WHERE acceptance_id = $1 AND kind = 'before_charge'",
        acceptance_id
    )?)
}

async fn acceptance(
    projector: &FunnelReportsProjector,
    tx: &mut Tx,
    pending: &mut Pending,
    event: &StoredEvent,
) -> anyhow::Result<()> {
    let position = event.global_position;
    let id = event.aggregate_id.as_str();
    match decode_event::<UpsellEvent>(&event.event_type, &event.payload)? {
        UpsellEvent::BeforeCharge {
            funnel_id,
            step,
            parent_order_id,
            amount,
            currency,
            at,
            ..
        } => {
            pending.record(
                position,
                Fact {
                    funnel_id: &funnel_id,
                    step: &step,
                    kind: "before_charge",
                    order_id: Some(&parent_order_id),
                    acceptance_id: Some(id),
                    amount: Some(amount),
                    currency: Some(currency.as_str()),
                    at,
                    key: format!("before_charge:{id}"),
                },
            );
            projector.remember(
                id,
                StepOf {
                    funnel_id: funnel_id.clone(),
                    step_key: step.clone(),
                    order_id: Some(parent_order_id.clone()),
                },
            );
            attribute(pending, &parent_order_id, &funnel_id, position);
        }
        UpsellEvent::Declined {
            funnel_id,
            step,
            parent_order_id,
            at,
            ..
        } => {
            pending.record(
                position,
                Fact {
                    funnel_id: &funnel_id,
                    step: &step,
                    kind: "declined",
                    order_id: Some(&parent_order_id),
                    acceptance_id: Some(id),
                    amount: None,
                    currency: None,
                    at,
                    key: format!("declined:{id}"),
                },
            );
            attribute(pending, &parent_order_id, &funnel_id, position);
        }
        UpsellEvent::Accepted {
            parent_order_id,
            amount,
            currency,
            at,
            ..
        } => {
            let Some(of) = step_of(projector, tx, pending, id).await? else {
                anyhow::bail!("upsell/accepted at {position} for {id} follows no before_charge");
            };
            for (kind, key) in [
                ("accepted", format!("accepted:{id}")),
                ("revenue", format!("revenue:{id}")),
            ] {
                pending.record(
                    position,
                    Fact {
                        funnel_id: &of.funnel_id,
                        step: &of.step_key,
                        kind,
                        order_id: Some(&parent_order_id),
                        acceptance_id: Some(id),
                        amount: Some(amount),
                        currency: Some(currency.as_str()),
                        at,
                        key,
                    },
                );
            }
            pending.write_order(OrderWrite::Upsell(UpsellTotal {
                order_id: parent_order_id.clone(),
                funnel_id: of.funnel_id.clone(),
                currency: currency.as_str().to_owned(),
                amount,
                position,
            }));
        }
        UpsellEvent::Refunded {
            refund_id,
            amount,
            currency,
            at,
            ..
        } => {
            let Some(of) = step_of(projector, tx, pending, id).await? else {
                anyhow::bail!("upsell/refunded at {position} for {id} follows no before_charge");
            };
            pending.record(
                position,
                Fact {
                    funnel_id: &of.funnel_id,
                    step: &of.step_key,
                    kind: "refunded",
                    order_id: of.order_id.as_deref(),
                    acceptance_id: Some(id),
                    amount: Some(amount),
                    currency: Some(currency.as_str()),
                    at,
                    key: format!("refunded:{id}:{refund_id}"),
                },
            );
        }
        _ => {}
    }
    Ok(())
}
