//! Reads of the funnel tables: funnels, their steps, and the active funnels the checkout's
//! resolve holds in memory.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::Db;
use crate::{fetch_all_db, fetch_optional_db};

/// A funnel as its table holds it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct FunnelRow {
    pub slug: String,
    pub name: String,
    /// draft, active or archived
    pub status: String,
    /// one_step, two_step or three_step
    pub layout: String,
    pub theme: String,
    pub priority: i32,
    pub is_default: bool,
    /// The trigger's targeting rules, JSON.
    pub trigger_rules: String,
    pub step_count: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_position: i64,
}

/// One step of a funnel as its table holds it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct FunnelStepRow {
    pub funnel_id: String,
    pub step_key: String,
    pub position: i64,
    /// checkout, bump, upsell, downsell, thank_you or custom
    pub step_type: String,
    pub offer_id: Option<String>,
    /// `{"default", "accepted", "declined"}`, JSON.
    pub branches: String,
}

const FUNNEL_COLUMNS: &str = "slug, name, status, layout, theme, priority, is_default, \
    trigger_rules, step_count, created_at, updated_at, last_position";

const STEP_COLUMNS: &str = "funnel_id, step_key, position, step_type, offer_id, branches";

/// Funnels, oldest first; `status` keeps only those in it.
pub async fn list_funnels(db: &Db, status: Option<&str>) -> Result<Vec<FunnelRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {FUNNEL_COLUMNS} FROM funnels WHERE ($1 IS NULL OR status = $1) \
         ORDER BY created_at, slug"
    );
    fetch_all_db!(db, FunnelRow, &sql, status)
}

/// One funnel by its slug.
pub async fn get_funnel(db: &Db, slug: &str) -> Result<Option<FunnelRow>, sqlx::Error> {
    let sql = format!("SELECT {FUNNEL_COLUMNS} FROM funnels WHERE slug = $1");
    fetch_optional_db!(db, FunnelRow, &sql, slug)
}

/// A funnel's steps, by position.
pub async fn funnel_steps(db: &Db, slug: &str) -> Result<Vec<FunnelStepRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {STEP_COLUMNS} FROM funnel_steps WHERE funnel_id = $1 ORDER BY position, step_key"
    );
    fetch_all_db!(db, FunnelStepRow, &sql, slug)
}

/// The steps of every funnel, by funnel and position (to go with [`list_funnels`]).
pub async fn all_funnel_steps(db: &Db) -> Result<Vec<FunnelStepRow>, sqlx::Error> {
    let sql =
        format!("SELECT {STEP_COLUMNS} FROM funnel_steps ORDER BY funnel_id, position, step_key");
    fetch_all_db!(db, FunnelStepRow, &sql)
}

/// The active funnels, highest priority first, and their steps (by funnel and position): what
/// the checkout's resolve holds in memory. Two reads, on the `(status, priority)` index and
/// the steps' key.
pub async fn active_funnels(db: &Db) -> Result<(Vec<FunnelRow>, Vec<FunnelStepRow>), sqlx::Error> {
    let sql = format!(
        "SELECT {FUNNEL_COLUMNS} FROM funnels WHERE status = 'active' \
         ORDER BY priority DESC, slug"
    );
    let funnels = fetch_all_db!(db, FunnelRow, &sql)?;
    let sql = "SELECT s.funnel_id, s.step_key, s.position, s.step_type, s.offer_id, s.branches \
         FROM funnel_steps s JOIN funnels f ON f.slug = s.funnel_id WHERE f.status = 'active' \
         ORDER BY s.funnel_id, s.position, s.step_key";
    let steps = fetch_all_db!(db, FunnelStepRow, sql)?;
    Ok((funnels, steps))
}
