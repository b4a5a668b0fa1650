//! Orders in, carts converted, runs credited or stopped: what the order API and the
//! WooCommerce webhook share, and what a restore link does.
//!
//! Recording an order is safe to repeat (a webhook retried after a crash, a replayed
//! delivery): the cart conversion comes first and is idempotent for the same order id, then
//! the order is recorded with the attribution the conversion answered. The buyer's other open
//! runs are stopped by the recovery follow-ups (`processors::recovery::followups`) when they
//! reach the recorded order, so an admin conversion or a replay gets the same effect. A repeat
//! finds each step done and changes nothing.

use chrono::{DateTime, Duration, Utc};
use ocart_domain::cart::{cart_id_for_session, CartCommand, CartError, CartStatus};
use ocart_domain::order::{
    is_paid, order_id_for, signal_applies, Attribution, AttributionOutcome, MatchedBy,
    OrderCommand, OrderFacts,
};
use ocart_domain::recovery::{
    restore_link_expired, restore_refusal, CartState, RestoreCart, RestoreFailure, RestoreOutcome,
    RunCommand,
};
use ocart_domain::ProductId;
use ocart_domain::{CartItem, Currency, Email};
use ocart_projections::queries::recovery as q;
use ocart_projections::{CommandError, CommandMeta};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::core::Core;

/// An order signal, validated at the edge (order API or WooCommerce webhook).
#[derive(Debug, Clone)]
pub struct OrderSignal {
    pub order_id: String,
    pub status: String,
    pub payment_method: Option<String>,
    pub currency: Currency,
    pub total: i64,
    pub email: Option<Email>,
    pub placed_at: DateTime<Utc>,
    /// `api` or `woocommerce`.
    pub source: &'static str,
    /// The cart id, or the checkout session token the cart was captured with.
    pub cart_id: Option<String>,
    pub session_token: Option<String>,
    /// The token of the restore link the shopper came back through.
    pub restore_token: Option<String>,
    pub coupon_codes: Vec<String>,
    /// When the store last modified the order; signals are ordered by it.
    pub modified_at: Option<DateTime<Utc>>,
}

/// What recording an order did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordedOrder {
    pub order_id: String,
    pub paid: bool,
    /// The cart the order converted (once paid), how it matched, and whether it was a
    /// recovery or a sale completed before abandonment.
    #[schema(value_type = Option<Object>)]
    pub attribution: Option<Attribution>,
    /// Whether this signal changed anything (a replay does not).
    pub changed: bool,
    /// The signal is older (by the store's modification time) than what OCart has recorded,
    /// so it was ignored; `paid` and `attribution` are the recorded state.
    pub stale: bool,
    /// The log position of the last event written, for read-your-writes.
    pub position: Option<i64>,
}

/// A restore link's hand-over: where the shopper goes, and what was recorded.
pub enum Restore {
    /// Redirect here.
    Redirect {
        location: String,
        outcome: RestoreOutcome,
    },
    /// Show a page; nothing to hand over.
    Failed(RestoreFailure),
    /// Not a restore link of ours.
    Unknown,
}

impl Core {
    /// The cart an order came from: each kind of evidence the order carries is tried in
    /// [`MatchedBy::PRIORITY`] order, and the first that names a cart decides.
    async fn match_cart(
        &self,
        signal: &OrderSignal,
        email_hash: Option<&str>,
        lookback_days: u32,
    ) -> anyhow::Result<Option<(String, MatchedBy)>> {
        for by in MatchedBy::PRIORITY {
            let found = match by {
                MatchedBy::Session => match &signal.session_token {
                    Some(token) => {
                        self.known_cart(cart_id_for_session(token).to_string())
                            .await?
                    }
                    None => None,
                },
                MatchedBy::CartId => match &signal.cart_id {
                    Some(cart_id) => self.known_cart(cart_id.clone()).await?,
                    None => None,
                },
                MatchedBy::RestoreToken => match &signal.restore_token {
                    Some(token) => {
                        let hash = hex::encode(Sha256::digest(token.as_bytes()));
                        q::link_by_hash(&self.db, "restore", &hash)
                            .await?
                            .map(|link| link.cart_id)
                    }
                    None => None,
                },
                MatchedBy::Coupon => {
                    let mut found = None;
                    for code in &signal.coupon_codes {
                        if let Some(cart_id) = q::cart_of_coupon(&self.db, code).await? {
                            found = Some(cart_id);
                            break;
                        }
                    }
                    found
                }
                MatchedBy::Email => match email_hash {
                    Some(hash) => {
                        let since = signal.placed_at - Duration::days(i64::from(lookback_days));
                        q::cart_of_buyer(&self.db, hash, since, signal.placed_at).await?
                    }
                    None => None,
                },
            };
            if let Some(cart_id) = found {
                return Ok(Some((cart_id, by)));
            }
        }
        Ok(None)
    }

    /// `cart_id` if such a cart was ever captured.
    async fn known_cart(&self, cart_id: String) -> anyhow::Result<Option<String>> {
        let (cart, _, _) = self.carts.load(&cart_id).await?;
        Ok((cart.status() != CartStatus::New).then_some(cart_id))
    }

    /// Records an order signal: converts the cart it matched (once paid) and records the order
    /// (the recovery follow-ups then stop every other open run of the buyer). Safe to repeat.
    pub async fn record_order(
        &self,
        signal: OrderSignal,
        meta: &CommandMeta,
    ) -> anyhow::Result<RecordedOrder> {
        let settings = self.settings().await?;
        let paid = is_paid(
            &signal.status,
            signal.payment_method.as_deref(),
            &settings.recovery.offline_gateways,
        );
        let email_hash = signal
            .email
            .as_ref()
            .map(|e| self.vault.subject_for_email(e).as_str().to_owned());
        let aggregate_id = order_id_for(&signal.order_id).to_string();
        // A delivery older than what the order already has (by the store's modification time)
        // changes nothing: it converts no cart and stops no run. (The aggregate applies the
        // same rule to what it records.)
        let (known, _, _) = self.orders.load(&aggregate_id).await?;
        if let Some(facts) = known.facts() {
            if !signal_applies((facts.modified_at, facts.paid), (signal.modified_at, paid)) {
                return Ok(RecordedOrder {
                    order_id: signal.order_id,
                    paid: facts.paid,
                    attribution: known.attribution().cloned(),
                    changed: false,
                    stale: true,
                    position: None,
                });
            }
        }
        let mut position = None;
        let mut attribution = None;
        if paid {
            let matched = self
                .match_cart(
                    &signal,
                    email_hash.as_deref(),
                    settings.recovery.order_lookback_days,
                )
                .await?;
            if let Some((cart_id, matched_by)) = matched {
                let command = CartCommand::MarkConverted {
                    at: meta.at,
                    order_id: Some(signal.order_id.clone()),
                    revenue: Some(signal.total),
                    placed_at: Some(signal.placed_at),
                };
                match self.carts.execute(&cart_id, command, meta).await {
                    Ok(outcome) => {
                        position = outcome.last_position();
                        attribution = Some(Attribution {
                            cart_id,
                            matched_by,
                            outcome: if outcome.aggregate.converted_before_abandonment() {
                                AttributionOutcome::CompletedBeforeAbandonment
                            } else {
                                AttributionOutcome::Recovered
                            },
                        });
                    }
                    // Converted by another order, expired or erased: this order is not its.
                    Err(CommandError::Rejected(
                        CartError::Closed(_) | CartError::NotFound | CartError::NotActive(_),
                    )) => {}
                    Err(other) => return Err(other.into()),
                }
            }
        }
        let facts = OrderFacts {
            order_id: signal.order_id.clone(),
            status: signal.status.clone(),
            paid,
            payment_method: signal.payment_method.clone(),
            currency: signal.currency,
            total: signal.total,
            email_hash: email_hash.clone(),
            placed_at: signal.placed_at,
            source: signal.source.to_owned(),
            coupon_codes: signal
                .coupon_codes
                .iter()
                .map(|c| c.trim().to_ascii_uppercase())
                .collect(),
            modified_at: signal.modified_at,
        };
        let recorded = self
            .record_order_facts(facts, attribution, meta)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(RecordedOrder {
            position: recorded.position.or(position),
            ..recorded
        })
    }

    /// Records an order on its `Order` aggregate, with the attribution its cart conversion
    /// answered. What follows from a paid order (the buyer's other open runs stopped, the
    /// converted run credited) is done by the process managers that follow the log (the
    /// recovery follow-ups and the opener), whichever entry point recorded it.
    pub(crate) async fn record_order_facts(
        &self,
        facts: OrderFacts,
        attribution: Option<Attribution>,
        meta: &CommandMeta,
    ) -> Result<RecordedOrder, CommandError<ocart_domain::order::OrderError>> {
        let order_id = facts.order_id.clone();
        let paid = facts.paid;
        let aggregate_id = order_id_for(&order_id).to_string();
        let command = OrderCommand::Record {
            facts: Box::new(facts),
            attribution,
            at: meta.at,
        };
        let outcome = self.orders.execute(&aggregate_id, command, meta).await?;
        Ok(RecordedOrder {
            order_id,
            paid,
            attribution: outcome.aggregate.attribution().cloned(),
            changed: !outcome.events.is_empty(),
            stale: false,
            position: outcome.last_position(),
        })
    }

    /// The checkout page restore links send shoppers to.
    pub fn checkout_url(&self) -> String {
        if let Some(url) = &self.config.recovery.checkout_url {
            return url.clone();
        }
        match &self.woo {
            Some(woo) => woo.checkout_url(),
            None => format!(
                "{}/checkout/",
                self.config.recovery.public_url.trim_end_matches('/')
            ),
        }
    }

    /// Opens the restore link whose token is `token`: checks it, rebuilds the cart from the
    /// read model of the log, asks the store what is still for sale, records the click and its
    /// outcome on the run, and answers where to send the shopper.
    pub async fn restore(&self, token: &str, meta: &CommandMeta) -> anyhow::Result<Restore> {
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        let Some(link) = q::link_by_hash(&self.db, "restore", &hash).await? else {
            metrics::counter!("ocart_restore_failed_total", "reason" => "unknown").increment(1);
            return Ok(Restore::Unknown);
        };
        let settings = self.settings().await?;
        let record = |outcome: RestoreOutcome| RunCommand::RecordRestore {
            message_key: link.message_key.clone(),
            outcome,
            at: meta.at,
        };
        let expired = restore_link_expired(
            link.created_at,
            settings.recovery.restore_link_days,
            meta.at,
        );
        let cart = q::cart_for_send(&self.db, &link.cart_id).await?;
        // A converted cart blocks its restore only while its order stands (paid): a cancelled,
        // failed or refunded order leaves the shopper free to buy it again.
        let order_paid = match cart.as_ref().and_then(|c| c.order_id.as_deref()) {
            Some(id) if cart.as_ref().is_some_and(|c| c.status == "converted") => {
                q::get_order(&self.db, id).await?.map(|o| o.paid)
            }
            _ => None,
        };
        let failure = restore_refusal(
            expired,
            cart.as_ref().map(|c| RestoreCart {
                state: CartState::from_status(&c.status),
                erased: c.erased,
                order_paid,
            }),
        );
        let (cart, items) = match (failure, cart) {
            (None, Some(cart)) => {
                let items: Vec<CartItem> = serde_json::from_value(cart.items.0.clone())?;
                (cart, items)
            }
            (failure, _) => {
                let reason = failure.unwrap_or(RestoreFailure::CartErased);
                let outcome = RestoreOutcome::Failed { reason };
                self.runs
                    .execute(&link.run_id, record(outcome), meta)
                    .await?;
                metrics::counter!("ocart_restore_failed_total", "reason" => reason.as_str())
                    .increment(1);
                return Ok(Restore::Failed(reason));
            }
        };
        // WooCommerce's ids are numbers; a store with string ids is not asked (fail open).
        let mut ids: Vec<u64> = items
            .iter()
            .filter_map(|i| i.product_id.as_number())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let unavailable: Vec<ProductId> = match &self.woo {
            Some(woo) => match woo.unavailable(&ids).await {
                Ok(gone) => gone.into_iter().map(ProductId::Number).collect(),
                Err(err) => {
                    // Fail open: a store that cannot answer still gets its shopper back.
                    tracing::warn!(error = %err, "cannot check product availability; restoring all items");
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        let kept: Vec<&CartItem> = items
            .iter()
            .filter(|i| !unavailable.contains(&i.product_id))
            .collect();
        let outcome = if kept.is_empty() {
            RestoreOutcome::Failed {
                reason: RestoreFailure::Unavailable,
            }
        } else if unavailable.is_empty() {
            RestoreOutcome::Restored
        } else {
            RestoreOutcome::Partial { unavailable }
        };
        self.runs
            .execute(&link.run_id, record(outcome.clone()), meta)
            .await?;
        if kept.is_empty() {
            return Ok(Restore::Failed(RestoreFailure::Unavailable));
        }
        let items = kept
            .iter()
            .map(|i| match &i.variation_id {
                Some(v) => format!(
                    "{}:{}x{}",
                    i.product_id.link_form(),
                    v.link_form(),
                    i.quantity
                ),
                None => format!("{}x{}", i.product_id.link_form(), i.quantity),
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut location = reqwest::Url::parse(&self.checkout_url())?;
        location
            .query_pairs_mut()
            .append_pair("ocart_restore", token)
            .append_pair("ocart_cart", &cart.cart_id)
            .append_pair("ocart_items", &items);
        Ok(Restore::Redirect {
            location: location.into(),
            outcome,
        })
    }
}
