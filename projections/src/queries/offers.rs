//! Reads of the offer tables: offers as defined, the active bumps, and the offer report.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use crate::db::Db;
use crate::{fetch_all_db, fetch_optional_db};

/// An offer as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct OfferRow {
    pub id: String,
    /// bump, upsell or downsell
    pub kind: String,
    pub name: String,
    /// active or archived
    pub status: String,
    /// ISO 4217 code.
    pub currency: String,
    /// `{product_id, name, price, quantity}`.
    #[schema(value_type = Object)]
    pub product: Json<Value>,
    /// Tagged by `type`.
    #[schema(value_type = Object)]
    pub pricing: Json<Value>,
    #[schema(value_type = Object)]
    pub targeting: Json<Value>,
    /// `{position, headline, copy, image_url}`.
    #[schema(value_type = Object)]
    pub display: Json<Value>,
    pub page_template: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_position: i64,
}

const OFFER_COLUMNS: &str = "id, kind, name, status, currency, product, pricing, targeting, \
    display, page_template, created_at, updated_at, last_position";

/// The offers of these kinds, oldest first; archived ones only when asked.
pub async fn list_offers(
    db: &Db,
    kinds: &[&str],
    include_archived: bool,
) -> Result<Vec<OfferRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {OFFER_COLUMNS} FROM offers WHERE kind IN ($1, $2) \
         AND ($3 OR status = 'active') ORDER BY created_at, id"
    );
    let first = kinds.first().copied().unwrap_or("");
    let second = kinds.get(1).copied().unwrap_or(first);
    fetch_all_db!(db, OfferRow, &sql, first, second, include_archived)
}

/// One offer by id.
pub async fn get_offer(db: &Db, id: &str) -> Result<Option<OfferRow>, sqlx::Error> {
    let sql = format!("SELECT {OFFER_COLUMNS} FROM offers WHERE id = $1");
    fetch_optional_db!(db, OfferRow, &sql, id)
}

/// The active bumps, oldest first.
pub async fn active_bumps(db: &Db) -> Result<Vec<OfferRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {OFFER_COLUMNS} FROM offers WHERE kind = 'bump' AND status = 'active' \
         ORDER BY created_at, id"
    );
    fetch_all_db!(db, OfferRow, &sql)
}

/// One offer's line in the offer report.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OfferReportRow {
    pub offer_id: String,
    /// The offer's name and kind, when it is still defined.
    pub name: Option<String>,
    pub kind: Option<String>,
    pub shown: i64,
    pub accepted: i64,
    pub declined: i64,
    /// Upsell charges that succeeded.
    pub charged: i64,
    /// accepted / shown; null when it was never shown.
    pub take_rate: Option<f64>,
    /// Revenue in minor units, per ISO 4217 currency code: paid orders' offer lines and
    /// accepted upsells.
    pub revenue: BTreeMap<String, i64>,
    /// Refunds in minor units, per currency.
    pub refunds: BTreeMap<String, i64>,
}

#[derive(sqlx::FromRow)]
struct FactCount {
    offer_id: String,
    kind: String,
    currency: Option<String>,
    upsell: bool,
    n: i64,
    amount: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct OfferName {
    id: String,
    name: String,
    kind: String,
}

/// The offer report: for each offer with a fact (or only `offer_id`), its counts and money.
pub async fn offer_report(
    db: &Db,
    offer_id: Option<&str>,
) -> Result<Vec<OfferReportRow>, sqlx::Error> {
    let facts = fetch_all_db!(
        db,
        FactCount,
        "SELECT offer_id, kind, currency, acceptance_id IS NOT NULL AS upsell, count(*) AS n, \
         CAST(sum(amount) AS BIGINT) AS amount FROM offer_events \
         WHERE ($1 IS NULL OR offer_id = $1) \
         GROUP BY offer_id, kind, currency, acceptance_id IS NOT NULL ORDER BY offer_id",
        offer_id
    )?;
    let names = fetch_all_db!(
        db,
        OfferName,
        "SELECT id, name, kind FROM offers WHERE ($1 IS NULL OR id = $1) ORDER BY created_at, id",
        offer_id
    )?;
    let mut rows: BTreeMap<String, OfferReportRow> = BTreeMap::new();
    let blank = |offer_id: &str| OfferReportRow {
        offer_id: offer_id.to_owned(),
        name: None,
        kind: None,
        shown: 0,
        accepted: 0,
        declined: 0,
        charged: 0,
        take_rate: None,
        revenue: BTreeMap::new(),
        refunds: BTreeMap::new(),
    };
    for offer in &names {
        let row = rows
            .entry(offer.id.clone())
            .or_insert_with(|| blank(&offer.id));
        row.name = Some(offer.name.clone());
        row.kind = Some(offer.kind.clone());
    }
    for fact in facts {
        let row = rows
            .entry(fact.offer_id.clone())
            .or_insert_with(|| blank(&fact.offer_id));
        let money = |map: &mut BTreeMap<String, i64>| {
            if let (Some(currency), Some(amount)) = (&fact.currency, fact.amount) {
                let sum = map.entry(currency.clone()).or_insert(0);
                *sum = sum.saturating_add(amount);
            }
        };
        match fact.kind.as_str() {
            "shown" => row.shown += fact.n,
            "accepted" => {
                row.accepted += fact.n;
                if fact.upsell {
                    money(&mut row.revenue);
                }
            }
            "declined" => row.declined += fact.n,
            "charged" => row.charged += fact.n,
            "revenue" => money(&mut row.revenue),
            "refunded" => money(&mut row.refunds),
            _ => {}
        }
    }
    Ok(rows
        .into_values()
        .map(|mut row| {
            row.take_rate = (row.shown > 0).then(|| row.accepted as f64 / row.shown as f64);
            row
        })
        .collect())
}
