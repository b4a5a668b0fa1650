//! Recovery coupons (CartBay's Offers): issued when a coupon step is sent, single use,
//! restricted to the captured email, `OCART-` codes, one active coupon per cart, none for carts
//! holding subscription products. In the embedded mode OCart's own registry
//! (`recovery_coupons`, built from `recovery/dispatched`) is what `POST
//! /ocart/v1/coupons/validate` answers from; with the WooCommerce connector the coupon is also
//! created in the store (usage limit 1, email restriction, expiry). Unused coupons past their
//! expiry are removed (from the store too) and recorded as `recovery/coupon_expired`.
//!
//! A coupon's code is an HMAC of (run, step) under the server secret: unguessable, and the
//! same when a crashed send is resumed, so a resumed send offers the same coupon and the store
//! is not left with a second one.

use chrono::{DateTime, Duration, Utc};
use ocart_domain::recovery::{CouponKind, IssuedCoupon, RunCommand, Step};
use ocart_domain::settings::SettingsValues;
use ocart_projections::queries::recovery::{self as q, CartForSend};
use ocart_projections::{CommandError, CommandMeta, Vault};

use super::channels::SendError;
use super::dispatcher::{Dispatcher, DISPATCHER};
use super::templates::decimal_amount;
use crate::store::NewCoupon;

/// The prefix of every recovery coupon code.
pub const CODE_PREFIX: &str = "OCART-";

/// The code of the coupon of `step` (1-based) of run `run_id`.
pub fn coupon_code(vault: &Vault, run_id: &str, step: u32) -> String {
    let token = vault.link_token("coupon", &format!("{run_id}.s{step}"));
    let body: String = token
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .filter(|c| !matches!(c, 'O' | '0' | 'I' | '1'))
        .take(10)
        .collect();
    format!("{CODE_PREFIX}{body}")
}

impl Dispatcher {
    /// The coupon to offer in step `step` of the run, issued now if the cart has none active.
    pub(crate) async fn coupon_for(
        &self,
        run_id: &str,
        step_no: u32,
        step: &Step,
        cart: &CartForSend,
        settings: &SettingsValues,
        now: DateTime<Utc>,
    ) -> Result<Option<IssuedCoupon>, SendError> {
        if !step.coupon {
            return Ok(None);
        }
        let transient = |e: String| SendError {
            message: e,
            permanent: false,
        };
        let items = cart.cart_items().map_err(|message| SendError {
            message,
            permanent: true,
        })?;
        if !ocart_domain::recovery::cart_may_get_coupon(&items) {
            return Ok(None);
        }
        let db = self.log().db();
        if let Some(active) = q::active_coupon_of_cart(db, &cart.cart_id, now)
            .await
            .map_err(|e| transient(e.to_string()))?
        {
            return Ok(Some(IssuedCoupon {
                code: active.code,
                kind: if active.kind == "percent" {
                    CouponKind::Percent
                } else {
                    CouponKind::FixedCart
                },
                amount: active.amount,
                currency: active.currency,
                expires_at: active.expires_at,
                store_id: active.store_id.map(|i| i as u64),
            }));
        }
        let discount = step
            .discount
            .unwrap_or_else(|| settings.recovery.default_discount());
        let code = coupon_code(self.vault(), run_id, step_no);
        let expires_at = now + Duration::days(i64::from(discount.expiry_days));
        let store_id = match self.store() {
            Some(woo) => {
                let amount = match discount.kind {
                    CouponKind::FixedCart => decimal_amount(discount.amount, &cart.currency),
                    CouponKind::Percent => discount.amount.to_string(),
                };
                let created = woo
                    .create_coupon(&NewCoupon {
                        code: &code,
                        kind: discount.kind.as_str(),
                        amount,
                        email: cart.email.as_deref(),
                        expires_at,
                        cart_id: &cart.cart_id,
                    })
                    .await
                    .map_err(|e| transient(format!("creating coupon {code}: {e}")))?;
                Some(created)
            }
            None => None,
        };
        Ok(Some(IssuedCoupon {
            code,
            kind: discount.kind,
            amount: discount.amount,
            currency: cart.currency.clone(),
            expires_at,
            store_id,
        }))
    }

    /// Removes unused coupons past their expiry (from the store too); answers how many.
    pub(crate) async fn expire_coupons(&self, now: DateTime<Utc>) -> anyhow::Result<u64> {
        let expired = q::expired_coupons(self.log().db(), now, 100).await?;
        let mut done = 0;
        for coupon in expired {
            if let (Some(woo), Some(id)) = (self.store(), coupon.store_id) {
                if let Err(err) = woo.delete_coupon(id as u64).await {
                    tracing::warn!(code = %coupon.code, error = %err, "cannot delete an expired coupon in the store; will retry");
                    continue;
                }
            }
            let meta = CommandMeta::system(DISPATCHER, None, now);
            let command = RunCommand::ExpireCoupon {
                code: coupon.code.clone(),
                at: now,
            };
            match self.runs().execute(&coupon.run_id, command, &meta).await {
                Ok(outcome) => done += outcome.events.len() as u64,
                Err(CommandError::Rejected(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(done)
    }
}

/// Formats a coupon's expiry for messages (`2026-12-31`).
pub fn expiry_label(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_amounts_are_decimals_of_the_currency() {
        assert_eq!(decimal_amount(1000, "EUR"), "10.00");
        assert_eq!(decimal_amount(5, "USD"), "0.05");
        assert_eq!(decimal_amount(500, "JPY"), "500");
        assert_eq!(decimal_amount(1500, "KWD"), "1.500");
    }
}
