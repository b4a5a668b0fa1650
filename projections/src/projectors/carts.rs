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

    async fn upsert(
        &self,
        tx: &mut Tx,
        cart_id: &str,
        c: &CartContent,
        position: i64,
    ) -> anyhow::Result<()> {
        let email = self.vault.unseal(&c.email.sealed).await?;
        let phone = match &c.phone {
            Some(p) => self.vault.unseal(&p.sealed).await?,
            None => None,
        };
        let name = match &c.name {
            Some(n) => self.vault.unseal(n).await?,
            None => None,
        };
        let erased = email.is_none();
        let stage = serde_json::to_value(c.stage)?
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let source = serde_json::to_value(c.source)?
            .as_str()
            .unwrap_or_default()
            .to_owned();
        exec_tx!(
            tx,
            "INSERT INTO carts (cart_id, session_token, email, email_hash, phone, phone_hash, name, erased, \
               status, stage, source, currency, items, totals, total_minor, consent_text, consent_at, \
               created_at, updated_at, last_activity_at, last_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $11, $12, $13, $14, $15, $16, $16, $16, $16, $17) \
             ON CONFLICT (cart_id) DO UPDATE SET email = excluded.email, email_hash = excluded.email_hash, \
               phone = excluded.phone, phone_hash = excluded.phone_hash, name = excluded.name, erased = excluded.erased, \
               status = 'active', stage = excluded.stage, source = excluded.source, currency = excluded.currency, \
               items = excluded.items, totals = excluded.totals, total_minor = excluded.total_minor, \
               consent_text = excluded.consent_text, consent_at = excluded.consent_at, \
               updated_at = excluded.updated_at, last_activity_at = excluded.last_activity_at, \
               abandoned_at = NULL, abandonment_kind = NULL, last_position = excluded.last_position \
             WHERE carts.last_position < excluded.last_position",
            cart_id,
            &c.session_token_hash,
            email,
            c.email.subject.as_str(),
            phone,
            c.phone.as_ref().map(|p| p.subject.as_str().to_owned()),
            name,
            erased,
            stage,
            source,
            c.currency.as_str(),
            Json(&c.items),
            Json(&c.totals),
            c.totals.total,
            &c.consent_text,
            c.captured_at,
            position
        )?;
        Ok(())
    }
}

async fn set_status(
    tx: &mut Tx,
    cart_id: &str,
    status: &str,
    at: DateTime<Utc>,
    position: i64,
) -> anyhow::Result<()> {
    exec_tx!(
        tx,
        "UPDATE carts SET status = $2, updated_at = $3, last_position = $4 WHERE cart_id = $1 AND last_position < $4",
        cart_id,
        status,
        at,
        position
    )?;
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
        for event in events {
            let position = event.global_position;
            let id = event.aggregate_id.as_str();
            match event.aggregate_type.as_str() {
                "cart" => match decode_event::<CartEvent>(&event.event_type, &event.payload)? {
                    CartEvent::Created(content) | CartEvent::Updated(content) => {
                        self.upsert(tx, id, &content, position).await?
                    }
                    CartEvent::ConsentWithdrawn { subjects, .. } => {
                        // Withdrawal erases the shopper's keys: blank them wherever they appear.
                        exec_tx!(tx, "DELETE FROM carts WHERE cart_id = $1", id)?;
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
                    CartEvent::Converted {
                        at,
                        order_id,
                        revenue,
                    } => {
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
                    CartEvent::Expired { at } => {
                        set_status(tx, id, "expired", at, position).await?
                    }
                },
                "subject" => {
                    let SubjectEvent::Erased { subject, .. } =
                        decode_event::<SubjectEvent>(&event.event_type, &event.payload)?;
                    self.vault.forget(&subject);
                    blank_subject(tx, subject.as_str()).await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
