//! The funnel report (per funnel and step: visits, accepts, declines, revenue, refunds; per
//! funnel: orders, revenue and average order value with and without offers) and the offer and
//! funnel totals of the dashboard. Money is in minor units per ISO 4217 code; amounts in
//! different currencies are never added together. What each number counts is the
//! `funnel_reports` projector's definition (`projectors/funnel_reports.rs`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::Db;
use crate::fetch_all_db;

/// Minor units per ISO 4217 code.
pub type Amounts = BTreeMap<String, i64>;

/// One step of one funnel.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FunnelStepReport {
    pub step: String,
    /// checkout, bump, upsell, downsell, thank_you, custom.
    pub step_type: String,
    pub offer_id: Option<String>,
    /// False for a step a later definition of the funnel dropped (its counts stay).
    pub current: bool,
    /// Bump steps: carts the bump was shown to (`bump/shown`); upsell and downsell steps:
    /// parent orders whose hosted offer page rendered the offer (`upsell/shown`, once per
    /// order and step). Null for steps OCart does not see (checkout, thank_you, custom).
    pub visits: Option<i64>,
    /// Bumps taken (`bump/accepted`); upsells charged and written to the store
    /// (`upsell/accepted`).
    pub accepted: i64,
    /// `bump/declined` (including a bump removed after it was taken), `upsell/declined`.
    pub declined: i64,
    /// accepted / visits; null without visits.
    pub take_rate: Option<f64>,
    /// Per currency: the step's bump lines in orders recorded paid, or its accepted upsells.
    #[schema(value_type = Object)]
    pub revenue: Amounts,
    /// Per currency: refunds of the step's upsells.
    #[schema(value_type = Object)]
    pub refunds: Amounts,
}

/// The orders credited to a funnel (or to every funnel, on the dashboard).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FunnelOrders {
    /// Paid orders credited to the funnel: the first funnel that touched the order in the log
    /// (a line of one of its bump steps' offers, or one of its upsell steps shown or decided
    /// with the order as the parent).
    pub orders: i64,
    /// Of those, the ones that carried one of the funnel's bump lines or had one of its
    /// upsells accepted.
    pub orders_with_offers: i64,
    pub orders_without_offers: i64,
    /// Per currency: the orders' totals plus the upsells accepted on them (in the order's
    /// currency).
    #[schema(value_type = Object)]
    pub revenue: Amounts,
    #[schema(value_type = Object)]
    pub revenue_with_offers: Amounts,
    #[schema(value_type = Object)]
    pub revenue_without_offers: Amounts,
    /// revenue / orders per currency, in minor units rounded down.
    #[schema(value_type = Object)]
    pub average_order_value: Amounts,
    #[schema(value_type = Object)]
    pub aov_with_offers: Amounts,
    #[schema(value_type = Object)]
    pub aov_without_offers: Amounts,
}

/// One funnel's report.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FunnelReportRow {
    pub funnel_id: String,
    /// The current steps by position, then the dropped ones.
    pub steps: Vec<FunnelStepReport>,
    #[serde(flatten)]
    pub orders: FunnelOrders,
}

#[derive(sqlx::FromRow)]
struct StepRow {
    funnel_id: String,
    step_key: String,
    step_type: String,
    offer_id: Option<String>,
    is_current: bool,
}

#[derive(sqlx::FromRow)]
struct FactRow {
    funnel_id: String,
    step_key: String,
    kind: String,
    currency: Option<String>,
    n: i64,
    amount: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct OrderRow {
    funnel_id: String,
    currency: String,
    with_offers: bool,
    n: i64,
    amount: Option<i64>,
}

fn add(map: &mut Amounts, currency: &str, amount: i64) {
    let sum = map.entry(currency.to_owned()).or_insert(0);
    *sum = sum.saturating_add(amount);
}

fn averages(revenue: &Amounts, counts: &BTreeMap<String, i64>) -> Amounts {
    revenue
        .iter()
        .filter_map(|(currency, sum)| {
            let n = *counts.get(currency)?;
            (n > 0).then(|| (currency.clone(), sum.div_euclid(n)))
        })
        .collect()
}

/// Adds grouped order rows into a funnel's totals.
#[derive(Default)]
struct OrderTally {
    orders: FunnelOrders,
    all: BTreeMap<String, i64>,
    with: BTreeMap<String, i64>,
    without: BTreeMap<String, i64>,
}

impl OrderTally {
    fn add(&mut self, row: &OrderRow) {
        let amount = row.amount.unwrap_or(0);
        let o = &mut self.orders;
        o.orders += row.n;
        add(&mut o.revenue, &row.currency, amount);
        *self.all.entry(row.currency.clone()).or_insert(0) += row.n;
        if row.with_offers {
            o.orders_with_offers += row.n;
            add(&mut o.revenue_with_offers, &row.currency, amount);
            *self.with.entry(row.currency.clone()).or_insert(0) += row.n;
        } else {
            o.orders_without_offers += row.n;
            add(&mut o.revenue_without_offers, &row.currency, amount);
            *self.without.entry(row.currency.clone()).or_insert(0) += row.n;
        }
    }

    fn finish(mut self) -> FunnelOrders {
        let o = &mut self.orders;
        o.average_order_value = averages(&o.revenue, &self.all);
        o.aov_with_offers = averages(&o.revenue_with_offers, &self.with);
        o.aov_without_offers = averages(&o.revenue_without_offers, &self.without);
        self.orders
    }
}

const ORDERS: &str = "SELECT funnel_id, currency, (bump OR upsell_total > 0) AS with_offers, \
    count(*) AS n, CAST(sum(total + upsell_total) AS BIGINT) AS amount \
    FROM funnel_report_orders WHERE paid AND funnel_id IS NOT NULL";

/// The report of every funnel (or only `funnel_id`), by slug.
pub async fn funnel_report(
    db: &Db,
    funnel_id: Option<&str>,
) -> Result<Vec<FunnelReportRow>, sqlx::Error> {
    let steps = fetch_all_db!(
        db,
        StepRow,
        "SELECT funnel_id, step_key, step_type, offer_id, is_current FROM funnel_report_steps \
         WHERE ($1 IS NULL OR funnel_id = $1) \
         ORDER BY funnel_id, is_current DESC, position, step_key",
        funnel_id
    )?;
    let facts = fetch_all_db!(
        db,
        FactRow,
        "SELECT funnel_id, step_key, kind, currency, count(*) AS n, \
         CAST(sum(amount) AS BIGINT) AS amount FROM funnel_report_facts \
         WHERE ($1 IS NULL OR funnel_id = $1) GROUP BY funnel_id, step_key, kind, currency",
        funnel_id
    )?;
    let orders = fetch_all_db!(
        db,
        OrderRow,
        &format!(
            "{ORDERS} AND ($1 IS NULL OR funnel_id = $1) \
             GROUP BY funnel_id, currency, (bump OR upsell_total > 0)"
        ),
        funnel_id
    )?;
    let mut funnels: BTreeMap<String, (Vec<FunnelStepReport>, OrderTally)> = BTreeMap::new();
    for step in steps {
        let measured = matches!(step.step_type.as_str(), "bump" | "upsell" | "downsell");
        funnels
            .entry(step.funnel_id)
            .or_default()
            .0
            .push(FunnelStepReport {
                step: step.step_key,
                step_type: step.step_type,
                offer_id: step.offer_id,
                current: step.is_current,
                visits: measured.then_some(0),
                accepted: 0,
                declined: 0,
                take_rate: None,
                revenue: Amounts::new(),
                refunds: Amounts::new(),
            });
    }
    for fact in facts {
        let Some(step) = funnels
            .get_mut(&fact.funnel_id)
            .and_then(|(steps, _)| steps.iter_mut().find(|s| s.step == fact.step_key))
        else {
            continue;
        };
        match fact.kind.as_str() {
            "visit" => *step.visits.get_or_insert(0) += fact.n,
            "accepted" => step.accepted += fact.n,
            "declined" => step.declined += fact.n,
            "revenue" | "refunded" => {
                if let (Some(currency), Some(amount)) = (&fact.currency, fact.amount) {
                    let map = if fact.kind == "revenue" {
                        &mut step.revenue
                    } else {
                        &mut step.refunds
                    };
                    add(map, currency, amount);
                }
            }
            _ => {}
        }
    }
    for order in &orders {
        if let Some((_, tally)) = funnels.get_mut(&order.funnel_id) {
            tally.add(order);
        }
    }
    Ok(funnels
        .into_iter()
        .map(|(funnel_id, (mut steps, tally))| {
            for step in &mut steps {
                step.take_rate = step
                    .visits
                    .filter(|v| *v > 0)
                    .map(|v| step.accepted as f64 / v as f64);
            }
            FunnelReportRow {
                funnel_id,
                steps,
                orders: tally.finish(),
            }
        })
        .collect())
}

/// The orders credited to any funnel, placed in `[since, until)`.
pub async fn funnel_totals(
    db: &Db,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<FunnelOrders, sqlx::Error> {
    let rows = fetch_all_db!(
        db,
        OrderRow,
        &format!(
            "{ORDERS} AND placed_at >= $1 AND placed_at < $2 \
             GROUP BY funnel_id, currency, (bump OR upsell_total > 0)"
        ),
        since,
        until
    )?;
    let mut tally = OrderTally::default();
    for row in &rows {
        tally.add(row);
    }
    Ok(tally.finish())
}

/// Every offer's facts in a window, added up as the offer report adds one offer's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OfferTotals {
    /// Bumps shown, and upsell and downsell pages shown (once per parent order and step).
    pub shown: i64,
    /// Bumps taken and upsells accepted (charged and written to the store).
    pub accepted: i64,
    pub declined: i64,
    /// Upsell charges that succeeded.
    pub charged: i64,
    /// accepted / shown, as the offer report takes each offer's; null when nothing was shown.
    pub take_rate: Option<f64>,
    /// Per currency: paid orders' offer lines and accepted upsells.
    #[schema(value_type = Object)]
    pub revenue: Amounts,
    /// Per currency: upsell refunds.
    #[schema(value_type = Object)]
    pub refunds: Amounts,
}

#[derive(sqlx::FromRow)]
struct OfferFact {
    kind: String,
    currency: Option<String>,
    upsell: bool,
    n: i64,
    amount: Option<i64>,
}

/// The offer facts of `[since, until)` (`offer_events.at`).
pub async fn offer_totals(
    db: &Db,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<OfferTotals, sqlx::Error> {
    let facts = fetch_all_db!(
        db,
        OfferFact,
        "SELECT kind, currency, acceptance_id IS NOT NULL AS upsell, count(*) AS n, \
         CAST(sum(amount) AS BIGINT) AS amount FROM offer_events \
         WHERE at >= $1 AND at < $2 GROUP BY kind, currency, acceptance_id IS NOT NULL",
        since,
        until
    )?;
    let mut totals = OfferTotals::default();
    for fact in facts {
        let money = |map: &mut Amounts| {
            if let (Some(currency), Some(amount)) = (&fact.currency, fact.amount) {
                add(map, currency, amount);
            }
        };
        match fact.kind.as_str() {
            "shown" => totals.shown += fact.n,
            "accepted" => {
                totals.accepted += fact.n;
                if fact.upsell {
                    money(&mut totals.revenue);
                }
            }
            "declined" => totals.declined += fact.n,
            "charged" => totals.charged += fact.n,
            "revenue" => money(&mut totals.revenue),
            "refunded" => money(&mut totals.refunds),
            _ => {}
        }
    }
    totals.take_rate = (totals.shown > 0).then(|| totals.accepted as f64 / totals.shown as f64);
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_are_per_currency_and_rounded_down() {
        let revenue: Amounts = [("EUR".to_owned(), 1001), ("USD".to_owned(), 5)].into();
        let counts: BTreeMap<String, i64> = [("EUR".to_owned(), 2), ("USD".to_owned(), 0)].into();
        let aov = averages(&revenue, &counts);
        assert_eq!(aov, [("EUR".to_owned(), 500)].into());
    }
}
