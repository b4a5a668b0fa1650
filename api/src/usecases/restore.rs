//! Opening a restore link (`GET /r/{token}`): the link is checked (its expiry and refusals
//! are `domain::recovery::restore_refusal`), the cart rebuilt from the read model of the log,
//! the store asked what is still for sale, the click and its outcome recorded on the run, and
//! the shopper handed over to the checkout with the cart in the URL.

use ocart_domain::recovery::{
    restore_link_expired, restore_refusal, CartState, RestoreCart, RestoreFailure, RestoreOutcome,
    RunCommand,
};
use ocart_domain::{CartItem, ProductId};
use ocart_projections::queries::recovery as q;
use ocart_projections::{CommandError, CommandMeta};
use sha2::{Digest, Sha256};

use super::StoreFailure;
use crate::core::Core;

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

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(RestoreError);

/// A command failure: the store's, or (the run refusing a click it should always take)
/// internal.
fn failed<E: std::error::Error + Send + Sync + 'static>(err: CommandError<E>) -> RestoreError {
    match StoreFailure::split(err) {
        Ok(failure) => RestoreError::Store(failure),
        Err(refused) => RestoreError::Internal(refused.into()),
    }
}

/// The checkout page restore links send shoppers to.
pub fn checkout_url(core: &Core) -> String {
    if let Some(url) = &core.config.recovery.checkout_url {
        return url.clone();
    }
    match &core.woo {
        Some(woo) => woo.checkout_url(),
        None => format!(
            "{}/checkout/",
            core.config.recovery.public_url.trim_end_matches('/')
        ),
    }
}

/// Opens the restore link whose token is `token`: checks it, rebuilds the cart from the
/// read model of the log, asks the store what is still for sale, records the click and its
/// outcome on the run, and answers where to send the shopper.
pub async fn restore(
    core: &Core,
    token: &str,
    meta: &CommandMeta,
) -> Result<Restore, RestoreError> {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    let Some(link) = q::link_by_hash(&core.db, "restore", &hash).await? else {
        metrics::counter!("ocart_restore_failed_total", "reason" => "unknown").increment(1);
        return Ok(Restore::Unknown);
    };
    let settings = core.settings().await?;
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
    let cart = q::cart_for_send(&core.db, &link.cart_id).await?;
    // A converted cart blocks its restore only while its order stands (paid): a cancelled,
    // failed or refunded order leaves the shopper free to buy it again.
    let order_paid = match cart.as_ref().and_then(|c| c.order_id.as_deref()) {
        Some(id) if cart.as_ref().is_some_and(|c| c.status == "converted") => {
            q::get_order(&core.db, id).await?.map(|o| o.paid)
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
            let items: Vec<CartItem> =
                serde_json::from_value(cart.items.0.clone()).map_err(anyhow::Error::from)?;
            (cart, items)
        }
        (failure, _) => {
            let reason = failure.unwrap_or(RestoreFailure::CartErased);
            let outcome = RestoreOutcome::Failed { reason };
            core.runs
                .execute(&link.run_id, record(outcome), meta)
                .await
                .map_err(failed)?;
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
    let unavailable: Vec<ProductId> = match &core.woo {
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
    core.runs
        .execute(&link.run_id, record(outcome.clone()), meta)
        .await
        .map_err(failed)?;
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
    let mut location = reqwest::Url::parse(&checkout_url(core)).map_err(anyhow::Error::from)?;
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use ocart_domain::recovery::RunError;

    use super::*;
    use crate::usecases::testing::answer;

    #[test]
    fn a_lost_race_is_409_and_an_unavailable_store_503_with_retry_after() {
        let lost = failed(CommandError::<RunError>::Conflict("recovery run"));
        assert_eq!(answer(lost).0, StatusCode::CONFLICT);
        let down = failed(CommandError::<RunError>::Unavailable("down".into()));
        assert_eq!(
            answer(down),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let io = RestoreError::from(sqlx::Error::Io(std::io::ErrorKind::BrokenPipe.into()));
        assert_eq!(
            answer(io),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let refused = failed(CommandError::Rejected(RunError::NotFound));
        assert_eq!(answer(refused).0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
