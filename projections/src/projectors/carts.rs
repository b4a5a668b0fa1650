use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ocart_domain::cart::{AbandonmentKind, CartContent, CartEvent};
use ocart_domain::subject::SubjectEvent;
use serde_json::value::RawValue;
use sqlx::types::Json;

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;
use crate::vault::Vault;

/// Builds `carts`: one row per captured cart, personal fields unsealed (blank once erased).
pub struct CartsProjector {
    vault: Vault,
}

impl CartsProjector {
    pub fn new(vault: Vault) -> Self {
        Self { vault }
    }

    /// The full row a capture makes (created_at is kept by the upsert when the row exists).
    async fn row_from(&self, cart_id: &str, c: &CartContent, position: i64) -> anyhow::Result<Row> {
        let email = self.vault.unseal(&c.email.sealed).await?;
        let phone = match &c.phone {
            Some(p) => self.vault.unseal(&p.sealed).await?,
            None => None,
        };
        let name = match &c.name {
            Some(n) => self.vault.unseal(n).await?,
            None => None,
        };
        Ok(Row {
            cart_id: cart_id.to_owned(),
            session_token: c.session_token_hash.clone(),
            erased: email.is_none(),
            email,
            email_hash: c.email.subject.as_str().to_owned(),
            phone,
            phone_hash: c.phone.as_ref().map(|p| p.subject.as_str().to_owned()),
            name,
            status: "active",
            stage: c.stage.as_str(),
            abandonment_kind: None,
            source: c.source.as_str(),
            currency: c.currency.as_str().to_owned(),
            items: serde_json::value::to_raw_value(&c.items)?,
            totals: serde_json::value::to_raw_value(&c.totals)?,
            total_minor: c.totals.total,
            consent_text: c.consent_text.clone(),
            consent_at: c.captured_at,
            order_id: None,
            revenue_minor: None,
            created_at: c.captured_at,
            updated_at: c.captured_at,
            last_activity_at: c.captured_at,
            abandoned_at: None,
            converted_at: None,
            last_position: position,
        })
    }
}

/// A `carts` row, ready to write.
#[derive(Debug, Clone)]
struct Row {
    cart_id: String,
    session_token: String,
    email: Option<String>,
    email_hash: String,
    phone: Option<String>,
    phone_hash: Option<String>,
    name: Option<String>,
    erased: bool,
    status: &'static str,
    stage: &'static str,
    abandonment_kind: Option<&'static str>,
    source: &'static str,
    currency: String,
    items: Box<RawValue>,
    totals: Box<RawValue>,
    total_minor: i64,
    consent_text: Option<String>,
    consent_at: DateTime<Utc>,
    order_id: Option<String>,
    revenue_minor: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_activity_at: DateTime<Utc>,
    abandoned_at: Option<DateTime<Utc>>,
    converted_at: Option<DateTime<Utc>>,
    last_position: i64,
}

/// A cart whose row a batch rewrites whole: the last capture in the batch (decoded, unsealed
/// and turned into a row only when the batch is written, so a cart captured five times in one
/// batch is decoded once), and what later events of the batch changed on top of it.
struct Fold<'a> {
    content: &'a StoredEvent,
    /// When the batch's first capture of this cart happened (the row's created_at if new).
    created_at: DateTime<Utc>,
    after: Vec<Change>,
}

/// A lifecycle change applied on top of a folded capture.
enum Change {
    Abandoned {
        at: DateTime<Utc>,
        kind: &'static str,
        position: i64,
    },
    Converted {
        at: DateTime<Utc>,
        order_id: Option<String>,
        revenue: Option<i64>,
        position: i64,
    },
    Expired {
        at: DateTime<Utc>,
        position: i64,
    },
}

impl Change {
    fn apply(self, row: &mut Row) {
        match self {
            Change::Abandoned { at, kind, position } => {
                row.status = "abandoned";
                row.abandonment_kind = Some(kind);
                row.abandoned_at = Some(at);
                row.updated_at = at;
                row.last_position = position;
            }
            Change::Converted {
                at,
                order_id,
                revenue,
                position,
            } => {
                row.status = "converted";
                row.converted_at = Some(at);
                row.updated_at = at;
                row.order_id = order_id;
                row.revenue_minor = revenue;
                row.last_position = position;
            }
            Change::Expired { at, position } => {
                row.status = "expired";
                row.updated_at = at;
                row.last_position = position;
            }
        }
    }
}

/// What a batch will do to a cart's row.
enum Pending<'a> {
    Upsert(Fold<'a>),
    Delete,
}

/// The batch's pending writes, in first-touched order.
#[derive(Default)]
struct Batch<'a> {
    order: Vec<&'a str>,
    rows: HashMap<&'a str, Pending<'a>>,
}

impl<'a> Batch<'a> {
    fn put(&mut self, cart_id: &'a str, pending: Pending<'a>) {
        if self.rows.insert(cart_id, pending).is_none() {
            self.order.push(cart_id);
        }
    }

    fn fold_mut(&mut self, cart_id: &str) -> Option<&mut Fold<'a>> {
        match self.rows.get_mut(cart_id) {
            Some(Pending::Upsert(fold)) => Some(fold),
            _ => None,
        }
    }

    /// Writes everything pending: one multi-row upsert per chunk, and the deletes.
    async fn flush(&mut self, projector: &CartsProjector, tx: &mut Tx) -> anyhow::Result<()> {
        let mut upserts = Vec::new();
        for cart_id in std::mem::take(&mut self.order) {
            match self.rows.remove(cart_id) {
                Some(Pending::Upsert(fold)) => {
                    let content = match decode_event::<CartEvent>(
                        &fold.content.event_type,
                        &fold.content.payload,
                    )? {
                        CartEvent::Created(content) | CartEvent::Updated(content) => content,
                        other => anyhow::bail!("a capture was expected, not {other:?}"),
                    };
                    let mut row = projector
                        .row_from(cart_id, &content, fold.content.global_position)
                        .await?;
                    row.created_at = fold.created_at;
                    for change in fold.after {
                        change.apply(&mut row);
                    }
                    upserts.push(row);
                }
                Some(Pending::Delete) => {
                    exec_tx!(tx, "DELETE FROM carts WHERE cart_id = $1", cart_id)?;
                }
                None => {}
            }
        }
        let chunk_rows = match tx {
            Tx::Pg(_) => UPSERT_CHUNK_PG,
            Tx::Lite(_) => UPSERT_CHUNK_SQLITE,
        };
        for chunk in upserts.chunks(chunk_rows) {
            upsert_rows(tx, chunk).await?;
        }
        Ok(())
    }
}

/// When a capture happened, read from its payload without decoding the rest.
fn captured_at(event: &StoredEvent) -> anyhow::Result<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct CapturedAt {
        captured_at: DateTime<Utc>,
    }
    Ok(serde_json::from_str::<CapturedAt>(event.payload.get())?.captured_at)
}

/// Rows per upsert statement on PostgreSQL (columns are bound as arrays).
const UPSERT_CHUNK_PG: usize = 5000;
/// Rows per upsert statement on SQLite (26 anonymous parameters each: SQLite binds those by
/// index, while numbered ones cost a linear name lookup each).
const UPSERT_CHUNK_SQLITE: usize = 200;

const UPSERT_COLUMNS: &str = "cart_id, session_token, email, email_hash, phone, phone_hash, name, erased, status, stage, \
    abandonment_kind, source, currency, items, totals, total_minor, consent_text, consent_at, order_id, revenue_minor, \
    created_at, updated_at, last_activity_at, abandoned_at, converted_at, last_position";

const UPSERT_CONFLICT: &str = " ON CONFLICT (cart_id) DO UPDATE SET email = excluded.email, email_hash = excluded.email_hash, \
    phone = excluded.phone, phone_hash = excluded.phone_hash, name = excluded.name, erased = excluded.erased, \
    status = excluded.status, stage = excluded.stage, abandonment_kind = excluded.abandonment_kind, source = excluded.source, \
    currency = excluded.currency, items = excluded.items, totals = excluded.totals, total_minor = excluded.total_minor, \
    consent_text = excluded.consent_text, consent_at = excluded.consent_at, order_id = excluded.order_id, \
    revenue_minor = excluded.revenue_minor, updated_at = excluded.updated_at, last_activity_at = excluded.last_activity_at, \
    abandoned_at = excluded.abandoned_at, converted_at = excluded.converted_at, last_position = excluded.last_position \
    WHERE carts.last_position < excluded.last_position";

macro_rules! bind_row {
    ($query:expr, $r:expr) => {
        $query
            .bind(&$r.cart_id)
            .bind(&$r.session_token)
            .bind(&$r.email)
            .bind(&$r.email_hash)
            .bind(&$r.phone)
            .bind(&$r.phone_hash)
            .bind(&$r.name)
            .bind($r.erased)
            .bind($r.status)
            .bind($r.stage)
            .bind($r.abandonment_kind)
            .bind($r.source)
            .bind(&$r.currency)
            .bind(Json(&*$r.items))
            .bind(Json(&*$r.totals))
            .bind($r.total_minor)
            .bind(&$r.consent_text)
            .bind($r.consent_at)
            .bind(&$r.order_id)
            .bind($r.revenue_minor)
            .bind($r.created_at)
            .bind($r.updated_at)
            .bind($r.last_activity_at)
            .bind($r.abandoned_at)
            .bind($r.converted_at)
            .bind($r.last_position)
    };
}

async fn upsert_rows(tx: &mut Tx, rows: &[Row]) -> anyhow::Result<()> {
    match tx {
        Tx::Pg(t) => upsert_rows_pg(t, rows).await,
        Tx::Lite(t) => {
            const PER_ROW: usize = 26;
            let mut sql = format!("INSERT INTO carts ({UPSERT_COLUMNS}) VALUES ");
            for i in 0..rows.len() {
                sql.push_str(if i == 0 { "(" } else { ", (" });
                for j in 0..PER_ROW {
                    sql.push_str(if j == 0 { "?" } else { ", ?" });
                }
                sql.push(')');
            }
            sql.push_str(UPSERT_CONFLICT);
            let mut query = sqlx::query(&sql);
            for r in rows {
                query = bind_row!(query, r);
            }
            query.execute(&mut **t).await?;
            Ok(())
        }
    }
}

/// PostgreSQL: one statement for the whole chunk, each column bound as an array and unnested
/// (no per-row parameters to parse, plan or bind).
async fn upsert_rows_pg(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rows: &[Row],
) -> anyhow::Result<()> {
    fn col<'r, T>(rows: &'r [Row], f: impl Fn(&'r Row) -> T) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    let sql = format!(
        "INSERT INTO carts ({UPSERT_COLUMNS}) \
         SELECT u.cart_id, u.session_token, u.email, u.email_hash, u.phone, u.phone_hash, u.name, u.erased, \
                u.status, u.stage, u.abandonment_kind, u.source, u.currency, u.items::jsonb, u.totals::jsonb, \
                u.total_minor, u.consent_text, u.consent_at, u.order_id, u.revenue_minor, u.created_at, \
                u.updated_at, u.last_activity_at, u.abandoned_at, u.converted_at, u.last_position \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                     $8::bool[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], \
                     $15::text[], $16::bigint[], $17::text[], $18::timestamptz[], $19::text[], $20::bigint[], \
                     $21::timestamptz[], $22::timestamptz[], $23::timestamptz[], $24::timestamptz[], \
                     $25::timestamptz[], $26::bigint[]) \
              AS u({UPSERT_COLUMNS}){UPSERT_CONFLICT}"
    );
    sqlx::query(&sql)
        .bind(col(rows, |r| r.cart_id.as_str()))
        .bind(col(rows, |r| r.session_token.as_str()))
        .bind(col(rows, |r| r.email.as_deref()))
        .bind(col(rows, |r| r.email_hash.as_str()))
        .bind(col(rows, |r| r.phone.as_deref()))
        .bind(col(rows, |r| r.phone_hash.as_deref()))
        .bind(col(rows, |r| r.name.as_deref()))
        .bind(col(rows, |r| r.erased))
        .bind(col(rows, |r| r.status))
        .bind(col(rows, |r| r.stage))
        .bind(col(rows, |r| r.abandonment_kind))
        .bind(col(rows, |r| r.source))
        .bind(col(rows, |r| r.currency.as_str()))
        .bind(col(rows, |r| r.items.get()))
        .bind(col(rows, |r| r.totals.get()))
        .bind(col(rows, |r| r.total_minor))
        .bind(col(rows, |r| r.consent_text.as_deref()))
        .bind(col(rows, |r| r.consent_at))
        .bind(col(rows, |r| r.order_id.as_deref()))
        .bind(col(rows, |r| r.revenue_minor))
        .bind(col(rows, |r| r.created_at))
        .bind(col(rows, |r| r.updated_at))
        .bind(col(rows, |r| r.last_activity_at))
        .bind(col(rows, |r| r.abandoned_at))
        .bind(col(rows, |r| r.converted_at))
        .bind(col(rows, |r| r.last_position))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Blanks what was sealed under an erased subject's key: the email and the name sealed with
/// it, or the phone. Exactly what a rebuild (which finds no key) shows.
async fn blank_subject(tx: &mut Tx, subject: &str) -> anyhow::Result<()> {
    exec_tx!(
        tx,
        "UPDATE carts SET email = NULL, name = NULL, erased = true WHERE email_hash = $1",
        subject
    )?;
    exec_tx!(
        tx,
        "UPDATE carts SET phone = NULL WHERE phone_hash = $1",
        subject
    )?;
    Ok(())
}

#[async_trait]
impl Projector for CartsProjector {
    fn name(&self) -> &'static str {
        "carts"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["carts"]
    }

    fn indexes(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "carts_due",
                "CREATE INDEX IF NOT EXISTS carts_due ON carts (status, last_activity_at, cart_id)",
            ),
            (
                "carts_updated",
                "CREATE INDEX IF NOT EXISTS carts_updated ON carts (updated_at, cart_id)",
            ),
            (
                "carts_email_hash",
                "CREATE INDEX IF NOT EXISTS carts_email_hash ON carts (email_hash)",
            ),
            (
                "carts_phone_hash",
                "CREATE INDEX IF NOT EXISTS carts_phone_hash ON carts (phone_hash)",
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        // Events fold per cart in memory; the batch is written with a few multi-row
        // statements. Erasures flush first, so they see (and blank) every earlier row.
        let mut batch = Batch::default();
        for event in events {
            let position = event.global_position;
            let id = event.aggregate_id.as_str();
            match event.aggregate_type.as_str() {
                "cart" if matches!(event.event_type.as_str(), "cart/created" | "cart/updated") => {
                    let created_at = match batch.fold_mut(id) {
                        Some(fold) => fold.created_at,
                        None => captured_at(event)?,
                    };
                    batch.put(
                        id,
                        Pending::Upsert(Fold {
                            content: event,
                            created_at,
                            after: Vec::new(),
                        }),
                    );
                }
                "cart" => match decode_event::<CartEvent>(&event.event_type, &event.payload)? {
                    CartEvent::Created(_) | CartEvent::Updated(_) => {
                        unreachable!("captures are folded above")
                    }
                    CartEvent::ConsentWithdrawn { subjects, .. } => {
                        // Withdrawal erases the shopper's keys: blank them wherever they appear.
                        batch.put(id, Pending::Delete);
                        batch.flush(self, tx).await?;
                        for subject in &subjects {
                            self.vault.forget(subject);
                            blank_subject(tx, subject.as_str()).await?;
                        }
                    }
                    CartEvent::Abandoned { at, kind, .. } => {
                        let kind = match kind {
                            AbandonmentKind::CartAbandoned => "cart_abandoned",
                            AbandonmentKind::CheckoutAbandoned => "checkout_abandoned",
                        };
                        if let Some(fold) = batch.fold_mut(id) {
                            fold.after.push(Change::Abandoned { at, kind, position });
                        } else {
                            exec_tx!(
                                tx,
                                "UPDATE carts SET status = 'abandoned', abandonment_kind = $2, abandoned_at = $3, updated_at = $3, \
                                 last_position = $4 WHERE cart_id = $1 AND last_position < $4",
                                id,
                                kind,
                                at,
                                position
                            )?;
                        }
                    }
                    CartEvent::Converted {
                        at,
                        order_id,
                        revenue,
                        ..
                    } => {
                        if let Some(fold) = batch.fold_mut(id) {
                            fold.after.push(Change::Converted {
                                at,
                                order_id,
                                revenue,
                                position,
                            });
                        } else {
                            exec_tx!(
                                tx,
                                "UPDATE carts SET status = 'converted', converted_at = $2, updated_at = $2, order_id = $3, \
                                 revenue_minor = $4, last_position = $5 WHERE cart_id = $1 AND last_position < $5",
                                id,
                                at,
                                order_id,
                                revenue,
                                position
                            )?;
                        }
                    }
                    CartEvent::Expired { at } => {
                        if let Some(fold) = batch.fold_mut(id) {
                            fold.after.push(Change::Expired { at, position });
                        } else {
                            exec_tx!(
                                tx,
                                "UPDATE carts SET status = 'expired', updated_at = $2, last_position = $3 \
                                 WHERE cart_id = $1 AND last_position < $3",
                                id,
                                at,
                                position
                            )?;
                        }
                    }
                },
                "subject" => {
                    let SubjectEvent::Erased { subject, .. } =
                        decode_event::<SubjectEvent>(&event.event_type, &event.payload)?;
                    self.vault.forget(&subject);
                    batch.flush(self, tx).await?;
                    blank_subject(tx, subject.as_str()).await?;
                }
                _ => {}
            }
        }
        batch.flush(self, tx).await
    }
}
