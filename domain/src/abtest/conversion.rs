//! What a conversion is on each surface (issue 12, "a conversion is the surface's own
//! success"), as a pure rule: given a success the log records ([`Success`]) and a unit's
//! assignment (the surface of its test and what its variant serves), whether the success
//! converts the assignment and with what revenue ([`conversion`]).
//!
//! - An order for a cart (paid, attributed to the cart): converts the cart's checkout tests
//!   with the order total, and its bump tests whose assigned variant serves an offer the order
//!   has a line of, with those lines' total.
//! - An upsell accepted (charged, the store order written): converts the unit's upsell tests
//!   whose assigned variant serves the accepted offer, with the accepted price.
//! - A recovered order attributed to a recovery run: converts the run's recovery email and SMS
//!   tests with the order's revenue.
//!
//! Revenue is kept within 0 to [`MAX_AMOUNT`](crate::MAX_AMOUNT) minor units (what the
//! assignment takes).

use super::Surface;
use crate::order::OfferLine;
use crate::values::Currency;
use crate::MAX_AMOUNT;

/// A success recorded in the log that may convert assignments.
#[derive(Debug, Clone, PartialEq)]
pub enum Success<'a> {
    /// A paid order attributed to a cart (checkout and bump).
    Order {
        cart_id: &'a str,
        /// The store's order id.
        order_id: &'a str,
        /// The order total in minor units.
        total: i64,
        currency: Currency,
        /// The order's lines that came from an offer (bumps the shopper took).
        offer_lines: &'a [OfferLine],
    },
    /// An upsell accepted and charged (upsell).
    Upsell {
        /// The unit: see [`upsell_unit`](super::upsell_unit) when it exists, else the parent
        /// order's cart, else `order:{order_id}`.
        unit: &'a str,
        acceptance_id: &'a str,
        offer_id: &'a str,
        /// The accepted price in minor units.
        amount: i64,
        currency: Currency,
    },
    /// A recovered order credited to a recovery run (recovery email and SMS).
    Recovery {
        run_id: &'a str,
        /// The store's order id, when the run was credited with one.
        order_id: Option<&'a str>,
        /// The recovered revenue in minor units, when known.
        revenue: Option<i64>,
        currency: Option<Currency>,
    },
}

/// A conversion to record on an assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversion {
    /// The order or acceptance that converted.
    pub reference: String,
    /// Minor units, 0 to `MAX_AMOUNT`.
    pub revenue_minor: i64,
    pub currency: Option<Currency>,
}

impl Success<'_> {
    /// The unit the success belongs to (the cart, the upsell's unit, the run).
    pub fn unit(&self) -> &str {
        match self {
            Self::Order { cart_id, .. } => cart_id,
            Self::Upsell { unit, .. } => unit,
            Self::Recovery { run_id, .. } => run_id,
        }
    }

    /// The surfaces whose tests the success may convert.
    pub fn surfaces(&self) -> &'static [Surface] {
        match self {
            Self::Order { .. } => ORDER_SURFACES,
            Self::Upsell { .. } => UPSELL_SURFACES,
            Self::Recovery { .. } => RECOVERY_SURFACES,
        }
    }
}

/// The surfaces a paid order may convert ([`Success::Order`]).
pub const ORDER_SURFACES: &[Surface] = &[Surface::Checkout, Surface::Bump];
/// The surfaces an accepted upsell may convert ([`Success::Upsell`]).
pub const UPSELL_SURFACES: &[Surface] = &[Surface::Upsell];
/// The surfaces a recovered order may convert ([`Success::Recovery`]).
pub const RECOVERY_SURFACES: &[Surface] = &[Surface::RecoveryEmail, Surface::RecoverySms];

fn bounded(minor: i64) -> i64 {
    minor.clamp(0, MAX_AMOUNT)
}

/// The conversion `success` is for a unit assigned in a test on `surface` to a variant that
/// serves `serves`; `None` when it is none (another surface, a bump order without the
/// variant's offer, another upsell offer).
pub fn conversion(surface: Surface, serves: &str, success: &Success<'_>) -> Option<Conversion> {
    match (surface, success) {
        (
            Surface::Checkout,
            Success::Order {
                order_id,
                total,
                currency,
                ..
            },
        ) => Some(Conversion {
            reference: (*order_id).to_owned(),
            revenue_minor: bounded(*total),
            currency: Some(*currency),
        }),
        (
            Surface::Bump,
            Success::Order {
                order_id,
                currency,
                offer_lines,
                ..
            },
        ) => {
            let mut lines = offer_lines
                .iter()
                .filter(|l| l.offer_id == serves)
                .peekable();
            lines.peek()?;
            let revenue = lines.fold(0i64, |sum, l| sum.saturating_add(bounded(l.total)));
            Some(Conversion {
                reference: (*order_id).to_owned(),
                revenue_minor: bounded(revenue),
                currency: Some(*currency),
            })
        }
        (
            Surface::Upsell,
            Success::Upsell {
                acceptance_id,
                offer_id,
                amount,
                currency,
                ..
            },
        ) if *offer_id == serves => Some(Conversion {
            reference: (*acceptance_id).to_owned(),
            revenue_minor: bounded(*amount),
            currency: Some(*currency),
        }),
        (
            Surface::RecoveryEmail | Surface::RecoverySms,
            Success::Recovery {
                run_id,
                order_id,
                revenue,
                currency,
            },
        ) => Some(Conversion {
            reference: order_id.unwrap_or(run_id).to_owned(),
            revenue_minor: bounded(revenue.unwrap_or(0)),
            currency: *currency,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProductId;

    fn eur() -> Currency {
        Currency::parse("currency", "EUR").unwrap_or_else(|_| unreachable!())
    }

    fn line(offer_id: &str, total: i64) -> OfferLine {
        OfferLine {
            offer_id: offer_id.into(),
            product_id: ProductId::Number(7),
            quantity: 1,
            total,
        }
    }

    fn order(lines: &[OfferLine]) -> Success<'_> {
        Success::Order {
            cart_id: "cart-1",
            order_id: "1001",
            total: 4_500,
            currency: eur(),
            offer_lines: lines,
        }
    }

    #[test]
    fn an_order_converts_the_carts_checkout_tests_with_its_total() {
        let success = order(&[]);
        assert_eq!(success.unit(), "cart-1");
        assert_eq!(
            conversion(Surface::Checkout, "one_step", &success),
            Some(Conversion {
                reference: "1001".into(),
                revenue_minor: 4_500,
                currency: Some(eur()),
            })
        );
        assert_eq!(conversion(Surface::Upsell, "offer-a", &success), None);
        assert_eq!(conversion(Surface::RecoveryEmail, "t", &success), None);
    }

    #[test]
    fn a_bump_converts_only_with_a_line_of_the_variants_offer() {
        let lines = [
            line("offer-a", 900),
            line("offer-b", 300),
            line("offer-a", 100),
        ];
        let success = order(&lines);
        assert_eq!(
            conversion(Surface::Bump, "offer-a", &success).map(|c| c.revenue_minor),
            Some(1_000)
        );
        assert_eq!(conversion(Surface::Bump, "offer-c", &success), None);
        assert_eq!(conversion(Surface::Bump, "offer-a", &order(&[])), None);
    }

    #[test]
    fn an_upsell_converts_the_test_of_the_accepted_offer_and_a_run_its_recovery() {
        let accepted = Success::Upsell {
            unit: "cart-1",
            acceptance_id: "acc_1",
            offer_id: "offer-u",
            amount: 1_990,
            currency: eur(),
        };
        assert_eq!(
            conversion(Surface::Upsell, "offer-u", &accepted),
            Some(Conversion {
                reference: "acc_1".into(),
                revenue_minor: 1_990,
                currency: Some(eur()),
            })
        );
        assert_eq!(conversion(Surface::Upsell, "offer-v", &accepted), None);
        assert_eq!(conversion(Surface::Checkout, "one_step", &accepted), None);
        let recovered = Success::Recovery {
            run_id: "run-1",
            order_id: None,
            revenue: Some(-5),
            currency: None,
        };
        assert_eq!(recovered.surfaces().len(), 2);
        assert_eq!(
            conversion(Surface::RecoverySms, "tpl", &recovered),
            Some(Conversion {
                reference: "run-1".into(),
                revenue_minor: 0,
                currency: None,
            })
        );
    }
}
