//! Reads of the upsell tables: one acceptance with its refunds, an order's acceptances, and the
//! open acceptances the charger drives.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::Db;
use crate::{fetch_all_db, fetch_optional_db};

/// An acceptance as its table holds it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct AcceptanceRow {
    pub acceptance_id: String,
    pub offer_id: String,
    /// upsell or downsell
    pub kind: String,
    pub funnel_id: String,
    pub step: String,
    pub parent_order_id: String,
    /// `AcceptanceStatus::as_str`: charging, requires_action, unknown, succeeded, accepted,
    /// declined, declined_by_shopper
    pub status: String,
    /// What the shopper is shown (`AcceptanceStatus::shown`).
    pub shown_status: String,
    /// Minor units of `currency`; 0 for a decline.
    pub amount: i64,
    pub currency: Option<String>,
    pub gateway: Option<String>,
    pub charge_ref: Option<String>,
    pub child_order_id: Option<String>,
    /// Minor units the gateway refunded.
    pub refunded_amount: i64,
    /// Refunds requested and not yet answered by the gateway.
    pub refunds_pending: i32,
    pub unknown_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_position: i64,
}

/// One refund of an acceptance.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct RefundRow {
    pub acceptance_id: String,
    pub refund_id: String,
    pub amount: i64,
    /// requested, refunded or failed
    pub status: String,
    pub reason: Option<String>,
    pub refund_ref: Option<String>,
    pub store_refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "acceptance_id, offer_id, kind, funnel_id, step, parent_order_id, status, \
    shown_status, amount, currency, gateway, charge_ref, child_order_id, refunded_amount, \
    refunds_pending, unknown_attempts, created_at, updated_at, last_position";

/// The acceptances the charger has work on, least recently moved first, at most `limit`: a
/// charge being made (`charging`), one whose outcome is not known (`unknown`), one charged
/// whose store order is not written (`succeeded`), and any with a refund requested that the
/// gateway has not answered.
pub async fn open_acceptances(db: &Db, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = fetch_all_db!(
        db,
        (String,),
        "SELECT acceptance_id FROM upsell_acceptances \
         WHERE status IN ('charging', 'unknown', 'succeeded') OR refunds_pending > 0 \
         ORDER BY updated_at, acceptance_id LIMIT $1",
        limit.max(0)
    )?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// One acceptance by its id.
pub async fn get_acceptance(db: &Db, id: &str) -> Result<Option<AcceptanceRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM upsell_acceptances WHERE acceptance_id = $1");
    fetch_optional_db!(db, AcceptanceRow, &sql, id)
}

/// The acceptances of one parent order, oldest first.
pub async fn order_acceptances(
    db: &Db,
    parent_order_id: &str,
) -> Result<Vec<AcceptanceRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM upsell_acceptances WHERE parent_order_id = $1 \
         ORDER BY created_at, acceptance_id"
    );
    fetch_all_db!(db, AcceptanceRow, &sql, parent_order_id)
}

/// The refunds of one acceptance, oldest first.
pub async fn acceptance_refunds(db: &Db, id: &str) -> Result<Vec<RefundRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        RefundRow,
        "SELECT acceptance_id, refund_id, amount, status, reason, refund_ref, store_refund_id, \
         created_at, updated_at FROM upsell_refunds WHERE acceptance_id = $1 \
         ORDER BY created_at, refund_id",
        id
    )
}
