use async_trait::async_trait;
use ocart_domain::token::TokenEvent;
use sqlx::types::Json;

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Builds `api_tokens`, the table bearer-token auth reads. Only hashes are kept.
pub struct TokensProjector;

#[async_trait]
impl Projector for TokensProjector {
    fn name(&self) -> &'static str {
        "api_tokens"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["api_tokens"]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events.iter().filter(|e| e.aggregate_type == "token") {
            match decode_event::<TokenEvent>(&event.event_type, &event.payload)? {
                TokenEvent::Created {
                    name,
                    capabilities,
                    token_hash,
                    at,
                } => {
                    exec_tx!(
                        tx,
                        "INSERT INTO api_tokens (token_id, name, token_hash, capabilities, created_at) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (token_id) DO NOTHING",
                        &event.aggregate_id,
                        name,
                        token_hash,
                        Json(capabilities),
                        at
                    )?;
                }
                TokenEvent::Revoked { at } => {
                    exec_tx!(tx, "UPDATE api_tokens SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL", &event.aggregate_id, at)?;
                }
            }
        }
        Ok(())
    }
}
