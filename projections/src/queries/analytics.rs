//! Recovery analytics (CartBay's Overview cards) and the dashboard rollups, over a window
//! `[since, until)`. Money is summed per currency, in minor units; carts in different
//! currencies are never added together.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::Db;
use crate::{fetch_all_db, fetch_optional_db};

/// Minor units per ISO 4217 code.
pub type Amounts = BTreeMap<String, i64>;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RecoverySummary {
    /// Carts captured in the window.
    pub tracked_carts: i64,
    /// Carts that became abandoned in the window.
    pub abandoned_carts: i64,
    /// Abandoned carts a later order recovered (orders placed in the window, still paid, credited
    /// to a run that sent a message before the order).
    pub recovered_carts: i64,
    /// Recovered carts whose shopper had opened a restore link.
    pub link_restored_and_purchased: i64,
    /// Orders placed before their cart was abandoned (not recoveries).
    pub completed_before_abandonment: i64,
    /// Value of the carts abandoned in the window, per currency.
    #[schema(value_type = Object)]
    pub abandoned_value: Amounts,
    /// Revenue of recovering orders, per currency (an order cancelled, refunded or failed since
    /// no longer counts).
    #[schema(value_type = Object)]
    pub recovered_revenue: Amounts,
    /// recovered_carts / abandoned_carts.
    pub recovery_rate: f64,
    pub restore_clicks: i64,
    /// link_restored_and_purchased / restore_clicks.
    pub click_to_recovery_rate: f64,
    pub failed_restores: i64,
    /// Messages by lifecycle status (queued, attempted, sent, delivered, failed, retry_queued,
    /// canceled), updated in the window.
    #[schema(value_type = Object)]
    pub notifications: BTreeMap<String, i64>,
    pub steps: Vec<StepStats>,
}

/// How one step of one sequence did.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StepStats {
    pub sequence_id: String,
    /// 1-based.
    pub step: i32,
    pub sent: i64,
    pub delivered: i64,
    pub failed: i64,
    pub canceled: i64,
    /// Runs converted after this was the last step they sent.
    pub recovered: i64,
}

/// The condition an `orders o` row meets to count as recovered: placed after its cart was
/// abandoned, still paid, and credited to a run of the cart that sent a message before it was
/// placed (a run never credited, or whose credit was taken back when the order was cancelled,
/// refunded or failed, is not `converted`).
const RECOVERED: &str = "o.outcome = 'recovered' AND o.paid AND EXISTS (SELECT 1 FROM \
    recovery_runs rr WHERE rr.cart_id = o.cart_id AND rr.order_id = o.order_id \
    AND rr.status = 'converted')";

fn rate(part: i64, whole: i64) -> f64 {
    if whole <= 0 {
        0.0
    } else {
        ((part as f64 / whole as f64) * 10_000.0).round() / 10_000.0
    }
}

async fn count(
    db: &Db,
    sql: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let row: Option<(i64,)> = fetch_optional_db!(db, (i64,), sql, since, until)?;
    Ok(row.map(|(n,)| n).unwrap_or(0))
}

async fn amounts(
    db: &Db,
    sql: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Amounts, sqlx::Error> {
    let rows: Vec<(String, i64)> = fetch_all_db!(db, (String, i64), sql, since, until)?;
    Ok(rows.into_iter().collect())
}

pub async fn recovery_summary(
    db: &Db,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<RecoverySummary, sqlx::Error> {
    let tracked = count(
        db,
        "SELECT count(*) FROM carts WHERE created_at >= $1 AND created_at < $2",
        since,
        until,
    )
    .await?;
    let abandoned = count(
        db,
        "SELECT count(*) FROM carts WHERE abandoned_at >= $1 AND abandoned_at < $2",
        since,
        until,
    )
    .await?;
    let recovered = count(
        db,
        &format!(
            "SELECT count(DISTINCT o.cart_id) FROM orders o WHERE {RECOVERED} \
             AND o.placed_at >= $1 AND o.placed_at < $2"
        ),
        since,
        until,
    )
    .await?;
    let link_restored = count(
        db,
        &format!(
            "SELECT count(DISTINCT o.cart_id) FROM orders o WHERE {RECOVERED} \
             AND o.placed_at >= $1 AND o.placed_at < $2 AND EXISTS (SELECT 1 FROM \
             recovery_restores r WHERE r.cart_id = o.cart_id AND r.outcome <> 'failed' \
             AND r.clicked_at <= o.created_at)"
        ),
        since,
        until,
    )
    .await?;
    let before = count(
        db,
        "SELECT count(*) FROM orders WHERE outcome = 'completed_before_abandonment' \
         AND placed_at >= $1 AND placed_at < $2",
        since,
        until,
    )
    .await?;
    let clicks = count(
        db,
        "SELECT count(*) FROM recovery_restores WHERE clicked_at >= $1 AND clicked_at < $2",
        since,
        until,
    )
    .await?;
    let failed_restores = count(
        db,
        "SELECT count(*) FROM recovery_restores WHERE outcome = 'failed' \
         AND clicked_at >= $1 AND clicked_at < $2",
        since,
        until,
    )
    .await?;
    let abandoned_value = amounts(
        db,
        "SELECT currency, CAST(SUM(total_minor) AS BIGINT) FROM carts \
         WHERE abandoned_at >= $1 AND abandoned_at < $2 GROUP BY currency",
        since,
        until,
    )
    .await?;
    let recovered_revenue = amounts(
        db,
        &format!(
            "SELECT o.currency, CAST(SUM(o.total_minor) AS BIGINT) FROM orders o \
             WHERE {RECOVERED} AND o.placed_at >= $1 AND o.placed_at < $2 GROUP BY o.currency"
        ),
        since,
        until,
    )
    .await?;
    let notifications: Vec<(String, i64)> = fetch_all_db!(
        db,
        (String, i64),
        "SELECT status, count(*) FROM recovery_notifications \
         WHERE updated_at >= $1 AND updated_at < $2 GROUP BY status",
        since,
        until
    )?;
    let steps: Vec<StepStats> = fetch_all_db!(
        db,
        StepStats,
        "SELECT r.sequence_id, n.step, \
           CAST(SUM(CASE WHEN n.status IN ('sent', 'delivered') THEN 1 ELSE 0 END) AS BIGINT) AS sent, \
           CAST(SUM(CASE WHEN n.status = 'delivered' THEN 1 ELSE 0 END) AS BIGINT) AS delivered, \
           CAST(SUM(CASE WHEN n.status = 'failed' THEN 1 ELSE 0 END) AS BIGINT) AS failed, \
           CAST(SUM(CASE WHEN n.status = 'canceled' THEN 1 ELSE 0 END) AS BIGINT) AS canceled, \
           CAST(SUM(CASE WHEN n.status IN ('sent', 'delivered') AND r.status = 'converted' \
             AND r.current_step = n.step THEN 1 ELSE 0 END) AS BIGINT) AS recovered \
         FROM recovery_notifications n JOIN recovery_runs r ON r.run_id = n.run_id \
         WHERE n.updated_at >= $1 AND n.updated_at < $2 \
         GROUP BY r.sequence_id, n.step ORDER BY r.sequence_id, n.step",
        since,
        until
    )?;
    Ok(RecoverySummary {
        tracked_carts: tracked,
        abandoned_carts: abandoned,
        recovered_carts: recovered,
        link_restored_and_purchased: link_restored,
        completed_before_abandonment: before,
        abandoned_value,
        recovered_revenue,
        recovery_rate: rate(recovered, abandoned),
        restore_clicks: clicks,
        click_to_recovery_rate: rate(link_restored, clicks),
        failed_restores,
        notifications: notifications.into_iter().collect(),
        steps,
    })
}

/// Store-wide rollups for the dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OrderSummary {
    /// Paid orders placed in the window.
    pub orders: i64,
    /// Their revenue, per currency.
    #[schema(value_type = Object)]
    pub revenue: Amounts,
    /// Average order value, per currency (minor units, rounded down).
    #[schema(value_type = Object)]
    pub average_order_value: Amounts,
    /// Carts captured in the window that converted.
    pub converted_carts: i64,
    /// converted_carts / carts captured in the window.
    pub conversion_rate: f64,
}

pub async fn order_summary(
    db: &Db,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<OrderSummary, sqlx::Error> {
    let orders = count(
        db,
        "SELECT count(*) FROM orders WHERE paid AND placed_at >= $1 AND placed_at < $2",
        since,
        until,
    )
    .await?;
    let per_currency: Vec<(String, i64, i64)> = fetch_all_db!(
        db,
        (String, i64, i64),
        "SELECT currency, CAST(SUM(total_minor) AS BIGINT), count(*) FROM orders \
         WHERE paid AND placed_at >= $1 AND placed_at < $2 GROUP BY currency",
        since,
        until
    )?;
    let tracked = count(
        db,
        "SELECT count(*) FROM carts WHERE created_at >= $1 AND created_at < $2",
        since,
        until,
    )
    .await?;
    let converted = count(
        db,
        "SELECT count(*) FROM carts WHERE status = 'converted' AND created_at >= $1 AND created_at < $2",
        since,
        until,
    )
    .await?;
    Ok(OrderSummary {
        orders,
        revenue: per_currency
            .iter()
            .map(|(c, sum, _)| (c.clone(), *sum))
            .collect(),
        average_order_value: per_currency
            .iter()
            .map(|(c, sum, n)| (c.clone(), if *n > 0 { sum / n } else { 0 }))
            .collect(),
        converted_carts: converted,
        conversion_rate: rate(converted, tracked),
    })
}
