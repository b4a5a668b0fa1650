//! What an offer costs: the pricing rules of bumps (`fixed_addon`, `percent_addon`,
//! `free_gift`) and of upsells and downsells (a price, or `discount_pct` off the product's
//! price), all on [`Money`] with checked arithmetic.
//!
//! One rounding rule, stated here and in ADR 0014: a percentage of an amount is computed
//! exactly (in `i128`) and rounded to the currency's minor unit **half away from zero** (for
//! the non-negative amounts OCart handles: half up), the rule `Currency::parse_decimal` and
//! WooCommerce (PHP `round`) use. Percentages are basis points (1/100 of a percent), so `12.5 %`
//! is `1250` and no float touches money. The vectors in `domain/tests/vectors/pricing.json` were
//! computed with mpmath by `domain/tests/vectors/pricing.py`.

use serde::{Deserialize, Serialize};

use crate::money::{Money, MoneyError};
use crate::values::FieldError;

/// Basis points in one hundred percent.
pub const FULL: u32 = 10_000;

/// A percentage in basis points (1/100 of a percent), between 0 and 100 %.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Percent(u32);

impl Percent {
    pub fn from_basis_points(bp: u32) -> Result<Self, FieldError> {
        if bp > FULL {
            return Err(FieldError::new(
                "percent",
                format!("{bp} basis points is more than 100 %"),
            ));
        }
        Ok(Self(bp))
    }

    /// A percentage written as a decimal (`"12.5"`, `"50"`), at most two decimals, 0–100.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let bad = || {
            FieldError::new(
                field,
                format!("{raw:?} is not a percentage from 0 to 100 with at most two decimals"),
            )
        };
        let raw = raw.trim();
        let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 3 || fraction.len() > 2 || !digits(whole) {
            return Err(bad());
        }
        if !digits(fraction) {
            return Err(bad());
        }
        let bp = format!("{whole}{fraction:0<2}")
            .parse::<u32>()
            .map_err(|_| bad())?;
        Self::from_basis_points(bp).map_err(|_| bad())
    }

    pub fn basis_points(self) -> u32 {
        self.0
    }

    /// This percentage of `amount`, rounded to the minor unit half away from zero.
    pub fn of(self, amount: Money) -> Result<Money, MoneyError> {
        let exact = i128::from(amount.minor()) * i128::from(self.0);
        Money::new(round_div(exact, i128::from(FULL))?, amount.currency())
    }
}

impl TryFrom<u32> for Percent {
    type Error = String;
    fn try_from(value: u32) -> Result<Self, Self::Error> {
        Self::from_basis_points(value).map_err(|e| e.message)
    }
}

impl From<Percent> for u32 {
    fn from(value: Percent) -> Self {
        value.0
    }
}

/// `n / d` rounded half away from zero, for `d > 0`; refused when it leaves `i64`.
fn round_div(n: i128, d: i128) -> Result<i64, MoneyError> {
    let q = n / d;
    let r = n % d;
    let q = if 2 * r.abs() >= d { q + n.signum() } else { q };
    i64::try_from(q).map_err(|_| {
        if q < 0 {
            MoneyError::Negative
        } else {
            MoneyError::TooLarge
        }
    })
}

/// How a bump is priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BumpPricing {
    /// A fixed amount added to the order.
    FixedAddon { amount: Money },
    /// A percentage of the cart's subtotal.
    PercentAddon { percent: Percent },
    /// The product for free, once the cart's subtotal reaches `cart_min_total`.
    FreeGift { cart_min_total: Money },
}

/// How an upsell or downsell is priced, from the product's own price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpsellPricing {
    /// This price, whatever the product costs.
    Price { amount: Money },
    /// A percentage off the product's price.
    DiscountPct { percent: Percent },
}

/// Why an offer has no price for this cart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("the offer is priced in another currency than the cart")]
    CurrencyMismatch,
    #[error("the cart's subtotal is below the offer's minimum")]
    BelowMinimum,
    #[error("the price would be out of bounds: {0}")]
    OutOfBounds(MoneyError),
}

impl From<MoneyError> for PricingError {
    fn from(err: MoneyError) -> Self {
        match err {
            MoneyError::CurrencyMismatch => Self::CurrencyMismatch,
            other => Self::OutOfBounds(other),
        }
    }
}

/// A price quoted to the shopper: what they pay, and against what it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    /// What the shopper pays for the offer.
    pub price: Money,
    /// The price without the offer (the product's price), when there is one.
    pub regular: Option<Money>,
    /// `regular − price`, never negative (zero when the offer costs more than the product).
    pub saving: Money,
}

impl Quote {
    fn plain(price: Money) -> Self {
        Self {
            price,
            regular: None,
            saving: Money::zero(price.currency()),
        }
    }

    fn against(price: Money, regular: Money) -> Result<Self, PricingError> {
        let saving = regular.checked_sub(price).or_else(|e| match e {
            MoneyError::Negative => Ok(Money::zero(price.currency())),
            other => Err(other),
        })?;
        Ok(Self {
            price,
            regular: Some(regular),
            saving,
        })
    }
}

impl BumpPricing {
    /// The bump's price for a cart with this subtotal; `product_price` is the bumped product's
    /// own price where the store gave it (a free gift is shown against it).
    pub fn quote(
        &self,
        subtotal: Money,
        product_price: Option<Money>,
    ) -> Result<Quote, PricingError> {
        match self {
            Self::FixedAddon { amount } => {
                same(*amount, subtotal)?;
                Ok(Quote::plain(*amount))
            }
            Self::PercentAddon { percent } => Ok(Quote::plain(percent.of(subtotal)?)),
            Self::FreeGift { cart_min_total } => {
                same(*cart_min_total, subtotal)?;
                if subtotal.minor() < cart_min_total.minor() {
                    return Err(PricingError::BelowMinimum);
                }
                let free = Money::zero(subtotal.currency());
                match product_price {
                    Some(regular) => {
                        same(regular, subtotal)?;
                        Quote::against(free, regular)
                    }
                    None => Ok(Quote::plain(free)),
                }
            }
        }
    }
}

impl UpsellPricing {
    /// The offer's price for a product that costs `product_price`.
    pub fn quote(&self, product_price: Money) -> Result<Quote, PricingError> {
        let price = match self {
            Self::Price { amount } => {
                same(*amount, product_price)?;
                *amount
            }
            Self::DiscountPct { percent } => {
                let off = percent.of(product_price)?;
                product_price.checked_sub(off)?
            }
        };
        Quote::against(price, product_price)
    }
}

fn same(a: Money, b: Money) -> Result<(), PricingError> {
    if a.currency() == b.currency() {
        Ok(())
    } else {
        Err(PricingError::CurrencyMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::MAX_AMOUNT;
    use crate::values::Currency;

    fn cur(code: &str) -> Currency {
        Currency::parse("c", code).unwrap()
    }
    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR).unwrap()
    }
    fn pct(bp: u32) -> Percent {
        Percent::from_basis_points(bp).unwrap()
    }

    #[test]
    fn percentages_parse_from_decimals_or_are_refused_by_name() {
        let cases: &[(&str, &str, Option<u32>)] = &[
            ("a whole percentage is basis points × 100", "50", Some(5000)),
            ("one decimal is tenths of a percent", "12.5", Some(1250)),
            ("two decimals are basis points", "0.01", Some(1)),
            ("zero is a percentage", "0", Some(0)),
            ("one hundred is the most", "100", Some(10_000)),
            ("100.00 is one hundred", "100.00", Some(10_000)),
            ("past one hundred is refused", "100.01", None),
            ("three decimals are refused", "1.005", None),
            ("a sign is refused", "-5", None),
            ("an exponent is refused", "1e2", None),
            ("an empty string is refused", "", None),
            ("a bare point is refused", ".5", None),
            (
                "a huge number is refused, not wrapped",
                "99999999999999999999",
                None,
            ),
            ("multi-byte digits are refused", "５0", None),
        ];
        for (name, raw, expected) in cases {
            let got = Percent::parse("discount_pct", raw)
                .ok()
                .map(Percent::basis_points);
            assert_eq!(got, *expected, "{name}");
        }
        let err = Percent::parse("discount_pct", "150").unwrap_err();
        assert_eq!(err.field, "discount_pct");
    }

    #[test]
    fn a_percentage_rounds_half_away_from_zero_to_the_minor_unit() {
        let cases: &[(&str, i64, u32, i64)] = &[
            ("an exact percentage needs no rounding", 1000, 1000, 100),
            ("below half a cent rounds down", 1, 4999, 0),
            ("exactly half a cent rounds up", 1, 5000, 1),
            ("above half a cent rounds up", 1, 5001, 1),
            ("12.5 % of 0.99 is 0.12375, so 0.12", 99, 1250, 12),
            (
                "12.5 % of 1.00 is 0.125, so 0.13 (half up, not half even)",
                100,
                1250,
                13,
            ),
            ("12.5 % of 0.20 is 0.025, so 0.03", 20, 1250, 3),
            ("zero of anything is zero", 12345, 0, 0),
            (
                "all of the largest amount is the largest amount",
                MAX_AMOUNT,
                10_000,
                MAX_AMOUNT,
            ),
            ("0.01 % of the largest amount", MAX_AMOUNT, 1, 10_000_000),
        ];
        for (name, amount, bp, expected) in cases {
            assert_eq!(
                pct(*bp).of(eur(*amount)).unwrap().minor(),
                *expected,
                "{name}"
            );
        }
    }

    #[test]
    fn bumps_are_priced_by_their_rule() {
        let usd = |m| Money::new(m, cur("USD")).unwrap();
        type Case = (
            &'static str,
            BumpPricing,
            Money,
            Option<Money>,
            Result<(i64, i64), PricingError>,
        );
        let cases: Vec<Case> = vec![
            (
                "a fixed add-on costs its amount",
                BumpPricing::FixedAddon { amount: eur(2400) },
                eur(5000),
                None,
                Ok((2400, 0)),
            ),
            (
                "a fixed add-on in another currency is refused",
                BumpPricing::FixedAddon { amount: usd(2400) },
                eur(5000),
                None,
                Err(PricingError::CurrencyMismatch),
            ),
            (
                "a percent add-on is that share of the subtotal",
                BumpPricing::PercentAddon { percent: pct(1000) },
                eur(4999),
                None,
                Ok((500, 0)),
            ),
            (
                "a free gift at the minimum is free, shown against its price",
                BumpPricing::FreeGift {
                    cart_min_total: eur(5000),
                },
                eur(5000),
                Some(eur(1500)),
                Ok((0, 1500)),
            ),
            (
                "a free gift below the minimum is not offered",
                BumpPricing::FreeGift {
                    cart_min_total: eur(5000),
                },
                eur(4999),
                Some(eur(1500)),
                Err(PricingError::BelowMinimum),
            ),
        ];
        for (name, rule, subtotal, product, expected) in cases {
            let got = rule
                .quote(subtotal, product)
                .map(|q| (q.price.minor(), q.saving.minor()));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn upsells_are_priced_off_the_product() {
        type Case = (
            &'static str,
            UpsellPricing,
            i64,
            Result<(i64, i64), PricingError>,
        );
        let cases: Vec<Case> = vec![
            (
                "half off 48.00 is 24.00, saving 24.00",
                UpsellPricing::DiscountPct { percent: pct(5000) },
                4800,
                Ok((2400, 2400)),
            ),
            (
                "the discount is rounded, the price is what remains (33.33 % of 0.10)",
                UpsellPricing::DiscountPct { percent: pct(3333) },
                10,
                Ok((7, 3)),
            ),
            (
                "all off is free",
                UpsellPricing::DiscountPct {
                    percent: pct(10_000),
                },
                4800,
                Ok((0, 4800)),
            ),
            (
                "a set price saves the difference",
                UpsellPricing::Price { amount: eur(1999) },
                2999,
                Ok((1999, 1000)),
            ),
            (
                "a set price above the product's saves nothing",
                UpsellPricing::Price { amount: eur(3999) },
                2999,
                Ok((3999, 0)),
            ),
            (
                "the largest product price still prices",
                UpsellPricing::DiscountPct { percent: pct(1) },
                MAX_AMOUNT,
                Ok((MAX_AMOUNT - 10_000_000, 10_000_000)),
            ),
        ];
        for (name, rule, product, expected) in cases {
            let got = rule
                .quote(eur(product))
                .map(|q| (q.price.minor(), q.saving.minor()));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn rounding_never_overflows_or_panics() {
        assert_eq!(round_div(i128::MAX, 1), Err(MoneyError::TooLarge));
        assert_eq!(round_div(i128::MIN + 1, 1), Err(MoneyError::Negative));
        assert_eq!(round_div(-15, 10), Ok(-2), "half away from zero below zero");
        assert_eq!(round_div(15, 10), Ok(2));
        assert_eq!(round_div(14, 10), Ok(1));
    }

    /// Vectors computed with mpmath (`domain/tests/vectors/pricing.py`): percentage of an amount
    /// rounded half up, over random and edge amounts and percentages, in currencies of 0, 2 and
    /// 3 decimals.
    #[test]
    fn percentages_match_the_high_precision_reference() {
        #[derive(Deserialize)]
        struct Vector {
            currency: String,
            amount: i64,
            basis_points: u32,
            percent_of: i64,
            discounted: i64,
        }
        let raw = include_str!("../../tests/vectors/pricing.json");
        let vectors: Vec<Vector> = serde_json::from_str(raw).unwrap();
        assert!(
            vectors.len() >= 1000,
            "the vector file holds {} cases",
            vectors.len()
        );
        for v in vectors {
            let amount = Money::new(v.amount, cur(&v.currency)).unwrap();
            let p = pct(v.basis_points);
            assert_eq!(
                p.of(amount).unwrap().minor(),
                v.percent_of,
                "{} × {} bp",
                v.amount,
                v.basis_points
            );
            let q = UpsellPricing::DiscountPct { percent: p }
                .quote(amount)
                .unwrap();
            assert_eq!(
                q.price.minor(),
                v.discounted,
                "{} − {} bp",
                v.amount,
                v.basis_points
            );
        }
    }
}
