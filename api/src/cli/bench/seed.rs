//! The cart logs the replay, dispatch and sweep benches start from.

use ocart_domain::cart::{cart_id_for_session, session_token_hash, CartContent, CartEvent};
use ocart_domain::metadata::{chain_hash, GENESIS_HASH};
use ocart_domain::{CartItem, CartTotals, Currency, Email, PersonalField, Source, Stage};
use ocart_projections::{EventLog, NewEvent, Vault};
use serde_json::{json, Value};
use uuid::Uuid;

/// Writes `total` cart events: carts of 5 events each (created, 3 updates, abandoned), 10,000
/// distinct shoppers, personal data sealed as in production.
pub(super) async fn fill_log(log: &EventLog, vault: &Vault, total: u64) -> anyhow::Result<()> {
    fill_carts(log, vault, total, 5).await
}

/// Writes `total` cart events, `per_cart` (1–5) per cart: created, updates, and (the fifth)
/// abandoned.
pub(super) async fn fill_carts(
    log: &EventLog,
    vault: &Vault,
    total: u64,
    per_cart: i64,
) -> anyhow::Result<()> {
    let currency = Currency::parse("currency", "EUR").map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut sealed = Vec::new();
    for s in 0..10_000u64 {
        let email = Email::parse("email", &format!("shopper{s}@example.com"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let subject = vault.subject_for_email(&email);
        sealed.push(PersonalField {
            sealed: vault.seal(&subject, email.as_str()).await?,
            subject,
        });
    }
    let carts = total.div_ceil(per_cart as u64);
    let at = chrono::Utc::now();
    let mut pending = Vec::new();
    let mut written = 0u64;
    for c in 0..carts {
        let token = format!("replay-{c}");
        let cart_id = cart_id_for_session(&token).to_string();
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=per_cart {
            if written >= total {
                break;
            }
            let event = if seq == 5 {
                CartEvent::Abandoned {
                    at,
                    kind: ocart_domain::cart::AbandonmentKind::CheckoutAbandoned,
                    last_activity_at: at,
                    forced: false,
                }
            } else {
                let content = Box::new(CartContent {
                    session_token_hash: session_token_hash(&token),
                    email: sealed[(c % 10_000) as usize].clone(),
                    phone: None,
                    name: None,
                    consent_text: Some("Email me my cart".into()),
                    source: Source::Block,
                    stage: Stage::Checkout,
                    currency,
                    items: vec![CartItem {
                        product_id: ocart_domain::ProductId::Number(42),
                        variation_id: None,
                        sku: None,
                        name: "Mug".into(),
                        quantity: seq as u32,
                        unit_price: 1250,
                        categories: vec![],
                        image_url: None,
                        subscription: false,
                    }],
                    totals: CartTotals {
                        subtotal: 1250 * seq,
                        total: 1250 * seq,
                        ..CartTotals::default()
                    },
                    fingerprint: format!("{c}-{seq}"),
                    captured_at: at,
                });
                if seq == 1 {
                    CartEvent::Created(content)
                } else {
                    CartEvent::Updated(content)
                }
            };
            let mut value = serde_json::to_value(&event)?;
            let event_type = value["type"].as_str().unwrap_or_default().to_owned();
            let payload = value
                .get_mut("data")
                .map(Value::take)
                .unwrap_or(Value::Null);
            let hash = chain_hash(&prev, &event_type, &payload);
            pending.push(NewEvent {
                event_id: Uuid::now_v7(),
                aggregate_type: "cart".into(),
                aggregate_id: cart_id.clone(),
                sequence: seq,
                event_type,
                event_version: "1".into(),
                payload,
                metadata: json!({"actor": "bench", "prev_hash": prev, "hash": hash}),
            });
            prev = hash;
            written += 1;
        }
        if pending.len() >= 5000 {
            append_parallel(log, std::mem::take(&mut pending)).await?;
        }
    }
    append_parallel(log, pending).await?;
    Ok(())
}

async fn append_parallel(log: &EventLog, events: Vec<NewEvent>) -> anyhow::Result<()> {
    let mut by_aggregate: Vec<Vec<NewEvent>> = Vec::new();
    for e in events {
        match by_aggregate.last_mut() {
            Some(last) if last[0].aggregate_id == e.aggregate_id => last.push(e),
            _ => by_aggregate.push(vec![e]),
        }
    }
    let results =
        futures::future::join_all(by_aggregate.into_iter().map(|batch| log.append(batch))).await;
    for r in results {
        r?;
    }
    Ok(())
}
