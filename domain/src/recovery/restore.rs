//! The restore link's rules: how long a link lives (`recovery.restore_link_days`), and which
//! carts it can no longer rebuild, in order.

use chrono::{DateTime, Duration, Utc};

use super::{CartState, RestoreFailure};
use crate::order::order_blocks_restore;

/// Whether a restore link created at `created_at` has expired at `now`: it lives
/// `link_days` days, and is expired from the first instant past them.
pub fn restore_link_expired(created_at: DateTime<Utc>, link_days: u32, now: DateTime<Utc>) -> bool {
    now >= created_at + Duration::days(i64::from(link_days))
}

/// What the restore looks at of the link's cart.
#[derive(Debug, Clone, Copy)]
pub struct RestoreCart {
    pub state: CartState,
    /// The shopper was erased.
    pub erased: bool,
    /// For a converted cart, the paid state of its order as last signalled (`None`: no record
    /// of it).
    pub order_paid: Option<bool>,
}

/// Why a restore link cannot rebuild its cart, if it cannot: an expired link first, then a cart
/// gone, erased or expired, then a cart whose order stands (`order_blocks_restore`).
pub fn restore_refusal(expired: bool, cart: Option<RestoreCart>) -> Option<RestoreFailure> {
    if expired {
        return Some(RestoreFailure::Expired);
    }
    match cart {
        None => Some(RestoreFailure::CartErased),
        Some(c) if c.erased || c.state == CartState::Expired => Some(RestoreFailure::CartErased),
        Some(c) => (c.state == CartState::Converted && order_blocks_restore(c.order_paid))
            .then_some(RestoreFailure::AlreadyOrdered),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(hours: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-10T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::hours(hours)
    }

    #[test]
    fn a_restore_link_lives_its_days() {
        let table = [
            ("a link is valid the moment it is made", 0, false),
            (
                "a link is valid a second before its last day ends",
                7 * 24 - 1,
                false,
            ),
            ("a link expires when its days are over", 7 * 24, true),
            ("a link stays expired after", 30 * 24, true),
        ];
        for (rule, hours, expired) in table {
            assert_eq!(restore_link_expired(t(0), 7, t(hours)), expired, "{rule}");
        }
        assert!(
            restore_link_expired(t(0), 0, t(0)),
            "a link of zero days is expired at once"
        );
    }

    #[test]
    fn the_restore_refusals() {
        let cart = |state, erased, order_paid| {
            Some(RestoreCart {
                state,
                erased,
                order_paid,
            })
        };
        let table = [
            (
                "an abandoned cart restores",
                false,
                cart(CartState::Abandoned, false, None),
                None,
            ),
            (
                "an active cart restores",
                false,
                cart(CartState::Active, false, None),
                None,
            ),
            (
                "an expired link refuses before anything else",
                true,
                cart(CartState::Converted, true, Some(true)),
                Some(RestoreFailure::Expired),
            ),
            (
                "a cart gone is erased",
                false,
                None,
                Some(RestoreFailure::CartErased),
            ),
            (
                "an erased shopper's cart is erased",
                false,
                cart(CartState::Abandoned, true, None),
                Some(RestoreFailure::CartErased),
            ),
            (
                "an expired cart is erased",
                false,
                cart(CartState::Expired, false, None),
                Some(RestoreFailure::CartErased),
            ),
            (
                "a cart converted by a paid order is already ordered",
                false,
                cart(CartState::Converted, false, Some(true)),
                Some(RestoreFailure::AlreadyOrdered),
            ),
            (
                "a cart converted by an order OCart never saw is already ordered",
                false,
                cart(CartState::Converted, false, None),
                Some(RestoreFailure::AlreadyOrdered),
            ),
            (
                "a cart whose order was cancelled restores again",
                false,
                cart(CartState::Converted, false, Some(false)),
                None,
            ),
        ];
        for (rule, expired, cart, expected) in table {
            assert_eq!(restore_refusal(expired, cart), expected, "{rule}");
        }
    }
}
