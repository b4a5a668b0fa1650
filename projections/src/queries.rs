//! Read queries the API and CLI use. Handlers never write SQL; they call these.

/// A/B tests, their assignments and per-variant totals.
pub mod abtests;
/// Recovery analytics and dashboard rollups.
pub mod analytics;
/// The funnel report and the dashboard's offer and funnel totals.
pub mod funnel_reports;
/// Funnels and their steps.
pub mod funnels;
/// Offers (bumps, upsells, downsells) and their reports.
pub mod offers;
/// Recovery sequences, runs, messages and suppression.
pub mod recovery;
/// One-click upsell acceptances and their refunds.
pub mod upsells;

use chrono::{DateTime, Utc};
use ocart_domain::settings::SettingsValues;
use ocart_domain::token::Capability;
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use crate::db::Db;
use crate::store::Checkpoint;
use crate::{fetch_all_db, fetch_optional_db};

/// A row of `carts` as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct CartRow {
    pub cart_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub name: Option<String>,
    /// The cart's personal data was erased.
    pub erased: bool,
    /// active, abandoned, converted or expired
    pub status: String,
    pub stage: String,
    pub abandonment_kind: Option<String>,
    pub source: String,
    pub currency: String,
    #[schema(value_type = Vec<Object>)]
    pub items: Json<Value>,
    #[schema(value_type = Object)]
    pub totals: Json<Value>,
    /// Cart total in minor units.
    pub total_minor: i64,
    pub consent_text: Option<String>,
    pub consent_at: Option<DateTime<Utc>>,
    pub order_id: Option<String>,
    pub revenue_minor: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_activity_at: DateTime<Utc>,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub converted_at: Option<DateTime<Utc>>,
    /// Position of the last event applied to this row.
    pub last_position: i64,
}

const CART_COLUMNS: &str = "cart_id, email, phone, name, erased, status, stage, abandonment_kind, source, currency, \
    items, totals, total_minor, consent_text, consent_at, order_id, revenue_minor, created_at, updated_at, \
    last_activity_at, abandoned_at, converted_at, last_position";

/// Filters of `GET /carts`. `after` is the keyset cursor: the (updated_at, cart_id) of the
/// last row of the previous page.
#[derive(Debug, Clone, Default)]
pub struct CartFilter {
    pub status: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, String)>,
    pub limit: i64,
}

pub async fn list_carts(db: &Db, f: &CartFilter) -> Result<Vec<CartRow>, sqlx::Error> {
    let (after_at, after_id) = match &f.after {
        Some((at, id)) => (Some(*at), Some(id.clone())),
        None => (None, None),
    };
    let sql = format!(
        "SELECT {CART_COLUMNS} FROM carts \
         WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR updated_at >= $2) \
           AND ($3 IS NULL OR updated_at < $3 OR (updated_at = $3 AND cart_id < $4)) \
         ORDER BY updated_at DESC, cart_id DESC LIMIT $5"
    );
    fetch_all_db!(db, CartRow, &sql, &f.status, f.since, after_at, after_id, f.limit)
}

pub async fn get_cart(db: &Db, cart_id: &str) -> Result<Option<CartRow>, sqlx::Error> {
    let sql = format!("SELECT {CART_COLUMNS} FROM carts WHERE cart_id = $1");
    fetch_optional_db!(db, CartRow, &sql, cart_id)
}

/// Active carts whose last activity is at or before `cutoff` (the abandonment scan), oldest
/// first, after the keyset cursor `after` (`(last_activity_at, cart_id)` of the last one seen).
pub async fn carts_inactive_since(
    db: &Db,
    cutoff: DateTime<Utc>,
    after: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<InactiveCart>, sqlx::Error> {
    // A row-value bound, so the index seeks to the cursor. (An `OR` of the two comparisons
    // is only a filter: each scan then walked every entry before the cursor, including the
    // dead ones of carts just marked; 299 ms against 9 ms a scan, halfway through a
    // 1,000,000-cart sweep on PostgreSQL.) No cursor is the start of time.
    let (after_at, after_id) = after.unwrap_or((DateTime::<Utc>::UNIX_EPOCH, String::new()));
    fetch_all_db!(
        db,
        InactiveCart,
        "SELECT cart_id, last_activity_at, last_position FROM carts \
         WHERE status = 'active' AND last_activity_at <= $1 \
           AND (last_activity_at, cart_id) > ($2, $3) \
         ORDER BY last_activity_at, cart_id LIMIT $4",
        cutoff,
        after_at,
        after_id,
        limit
    )
}

/// An active cart past the inactivity threshold.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InactiveCart {
    pub cart_id: String,
    pub last_activity_at: DateTime<Utc>,
    /// The position of the last event the carts table has applied to this cart.
    pub last_position: i64,
}

/// The oldest last activity of any active cart: when the next abandonment falls due.
pub async fn earliest_active_activity(db: &Db) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let row: Option<(DateTime<Utc>,)> = fetch_optional_db!(
        db,
        (DateTime<Utc>,),
        "SELECT last_activity_at FROM carts WHERE status = 'active' ORDER BY last_activity_at LIMIT 1"
    )?;
    Ok(row.map(|(at,)| at))
}

/// Every row of `carts`, in id order: what a rebuild is compared against.
pub async fn all_carts(db: &Db) -> Result<Vec<CartRow>, sqlx::Error> {
    let sql = format!("SELECT {CART_COLUMNS} FROM carts ORDER BY cart_id");
    fetch_all_db!(db, CartRow, &sql)
}

/// A token as auth sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenRow {
    pub token_id: String,
    pub name: String,
    pub capabilities: Json<Vec<Capability>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn token_by_hash(db: &Db, token_hash: &str) -> Result<Option<TokenRow>, sqlx::Error> {
    fetch_optional_db!(
        db,
        TokenRow,
        "SELECT token_id, name, capabilities, created_at, revoked_at FROM api_tokens WHERE token_hash = $1",
        token_hash
    )
}

pub async fn list_tokens(db: &Db) -> Result<Vec<TokenRow>, sqlx::Error> {
    fetch_all_db!(db, TokenRow, "SELECT token_id, name, capabilities, created_at, revoked_at FROM api_tokens ORDER BY created_at, token_id")
}

/// The current settings and the position they are as of (defaults at position 0).
pub async fn current_settings(db: &Db) -> Result<(SettingsValues, i64), sqlx::Error> {
    let row: Option<(Json<SettingsValues>, i64)> = fetch_optional_db!(
        db,
        (Json<SettingsValues>, i64),
        "SELECT doc, position FROM settings_current WHERE id = 'settings'"
    )?;
    Ok(row
        .map(|(doc, position)| (doc.0, position))
        .unwrap_or_default())
}

/// A row of `audit_log`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct AuditRow {
    /// The global position of the event: stable across rebuilds.
    pub id: i64,
    pub event_id: String,
    pub actor: String,
    pub action: String,
    pub object_type: String,
    pub object_id: String,
    #[schema(value_type = Object)]
    pub diff: Json<Value>,
    pub ip: Option<String>,
    pub at: DateTime<Utc>,
}

pub async fn list_audit(db: &Db, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    fetch_all_db!(db, AuditRow, "SELECT id, event_id, actor, action, object_type, object_id, diff, ip, at FROM audit_log ORDER BY id DESC LIMIT $1", limit)
}

/// Every stored checkpoint by name.
pub async fn checkpoints(db: &Db) -> Result<Vec<(String, Checkpoint)>, sqlx::Error> {
    let rows: Vec<(String, i64, i64)> = fetch_all_db!(
        db,
        (String, i64, i64),
        "SELECT name, tx, position FROM checkpoints ORDER BY name"
    )?;
    Ok(rows
        .into_iter()
        .map(|(name, tx, position)| (name, Checkpoint { tx, position }))
        .collect())
}

/// How many events a reader at `at` has yet to read.
pub async fn lag_after(db: &Db, at: Checkpoint) -> Result<i64, sqlx::Error> {
    let (lag,): (i64,) = match db {
        Db::Pg(pool) => sqlx::query_as("SELECT count(*) FROM events WHERE (transaction_id, global_position) > ($1::bigint::text::xid8, $2)")
            .bind(at.tx)
            .bind(at.position)
            .fetch_one(pool)
            .await?,
        Db::Lite(pool) => sqlx::query_as("SELECT count(*) FROM events WHERE global_position > ?1").bind(at.position).fetch_one(pool).await?,
    };
    Ok(lag)
}
