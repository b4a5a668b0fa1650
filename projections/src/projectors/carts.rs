use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ocart_domain::cart::{AbandonmentKind, CartContent, CartEvent};
use ocart_domain::subject::SubjectEvent;
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
    async fn row_from(
        &self,
        cart_id: &str,
        c: &CartContent,
        payload: &serde_json::Value,
        position: i64,
    ) -> anyhow::Result<Row> {
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
            status: "active".into(),
            stage: serde_json::to_value(c.stage)?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            abandonment_kind: None,
            source: serde_json::to_value(c.source)?
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            currency: c.currency.as_str().to_owned(),
            items: payload.get("items").cloned().unwrap_or_default(),
            totals: payload.get("totals").cloned().unwrap_or_default(),
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

/// A `carts` row being built in memory for one batch.
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
    status: String,
    stage: String,
    abandonment_kind: Option<String>,
    source: String,
    currency: String,
    items: serde_json::Value,
    totals: serde_json::Value,
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

/// What a batch will do to a cart's row.
enum Pending {
    Upsert(Box<Row>),
    Delete,
}

/// The batch's pending writes, in first-touched order.
#[derive(Default)]
struct Batch {
    order: Vec<String>,
    rows: HashMap<String, Pending>,
}

impl Batch {
    fn put(&mut self, cart_id: &str, pending: Pending) {
        if self.rows.insert(cart_id.to_owned(), pending).is_none() {
            self.order.push(cart_id.to_owned());
        }
    }

    fn row_mut(&mut self, cart_id: &str) -> Option<&mut Row> {
        match self.rows.get_mut(cart_id) {
            Some(Pending::Upsert(row)) => Some(row),
            _ => None,
        }
    }

    /// Writes everything pending: one multi-row upsert per chunk, and the deletes.
    async fn flush(&mut self, tx: &mut Tx) -> anyhow::Result<()> {
        let mut upserts = Vec::new();
        for cart_id in std::mem::take(&mut self.order) {
            match self.rows.remove(&cart_id) {
                Some(Pending::Upsert(row)) => upserts.push(*row),
                Some(Pending::Delete) => {
                    exec_tx!(tx, "DELETE FROM carts WHERE cart_id = $1", &cart_id)?;
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

/// Rows per upsert statement (26 parameters each, under SQLite's and PostgreSQL's limits).
const UPSERT_CHUNK_PG: usize = 500;
/// SQLite looks bound parameters up by a linear scan (`sqlite3_bind_parameter_name`), so a
/// statement's binding cost grows with the square of its parameters: keep statements small.
const UPSERT_CHUNK_SQLITE: usize = 24;

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
            .bind(&$r.status)
            .bind(&$r.stage)
            .bind(&$r.abandonment_kind)
            .bind(&$r.source)
            .bind(&$r.currency)
            .bind(Json(&$r.items))
            .bind(Json(&$r.totals))
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
    const PER_ROW: usize = 26;
    let mut sql = format!("INSERT INTO carts ({UPSERT_COLUMNS}) VALUES ");
    for i in 0..rows.len() {
        sql.push_str(if i == 0 { "(" } else { ", (" });
        for j in 0..PER_ROW {
            if j > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", i * PER_ROW + j + 1));
        }
        sql.push(')');
    }
    sql.push_str(UPSERT_CONFLICT);
    match tx {
        Tx::Pg(t) => {
            let mut query = sqlx::query(&sql);
            for r in rows {
                query = bind_row!(query, r);
            }
            query.execute(&mut **t).await?;
        }
        Tx::Lite(t) => {
            let lite = crate::db::lite_sql(&sql);
            let mut query = sqlx::query(&lite);
            for r in rows {
                query = bind_row!(query, r);
            }
            query.execute(&mut **t).await?;
        }
    }
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

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        // Events fold into rows in memory; the batch is written with a few multi-row
        // statements. Erasures flush first, so they see (and blank) every earlier row.
        let mut batch = Batch::default();
        for event in events {
            let position = event.global_position;
            let id = event.aggregate_id.as_str();
            match event.aggregate_type.as_str() {
                "cart" => match decode_event::<CartEvent>(&event.event_type, &event.payload)? {
                    CartEvent::Created(content) | CartEvent::Updated(content) => {
                        let mut row = self
                            .row_from(id, &content, &event.payload, position)
                            .await?;
                        if let Some(existing) = batch.row_mut(id) {
                            row.created_at = existing.created_at;
                        }
                        batch.put(id, Pending::Upsert(Box::new(row)));
                    }
                    CartEvent::ConsentWithdrawn { subjects, .. } => {
                        // Withdrawal erases the shopper's keys: blank them wherever they appear.
                        batch.put(id, Pending::Delete);
                        batch.flush(tx).await?;
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
                        if let Some(row) = batch.row_mut(id) {
                            row.status = "abandoned".into();
                            row.abandonment_kind = Some(kind.into());
                            row.abandoned_at = Some(at);
                            row.updated_at = at;
                            row.last_position = position;
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
                    } => {
                        if let Some(row) = batch.row_mut(id) {
                            row.status = "converted".into();
                            row.converted_at = Some(at);
                            row.updated_at = at;
                            row.order_id = order_id;
                            row.revenue_minor = revenue;
                            row.last_position = position;
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
                        if let Some(row) = batch.row_mut(id) {
                            row.status = "expired".into();
                            row.updated_at = at;
                            row.last_position = position;
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
                    batch.flush(tx).await?;
                    blank_subject(tx, subject.as_str()).await?;
                }
                _ => {}
            }
        }
        batch.flush(tx).await
    }
}
