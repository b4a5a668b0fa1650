//! Money: integer minor units of one ISO 4217 currency, with checked arithmetic and the bounds
//! OCart accepts at its edges. No floats touch money; no amount wraps or saturates.

use crate::values::{Currency, FieldError};

/// The largest amount OCart accepts for one price, line or cart total: 10¹¹ minor units
/// (a billion euros, a hundred billion yen). Sums over many carts stay far inside `i64`.
pub const MAX_AMOUNT: i64 = 100_000_000_000;

/// The most units of one product a cart line may hold.
pub const MAX_QUANTITY: u32 = 10_000;

/// Why an amount was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("must not be negative")]
    Negative,
    #[error("must be at most {MAX_AMOUNT} minor units")]
    TooLarge,
    #[error("mixes two currencies")]
    CurrencyMismatch,
}

impl MoneyError {
    /// The error as a field error of an input.
    pub fn at(self, field: impl Into<String>) -> FieldError {
        FieldError::new(field, self.to_string())
    }
}

/// An amount in minor units of its currency, between 0 and [`MAX_AMOUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    minor: i64,
    currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Result<Self, MoneyError> {
        Ok(Self {
            minor: bounded(minor)?,
            currency,
        })
    }

    pub fn zero(currency: Currency) -> Self {
        Self { minor: 0, currency }
    }

    pub fn minor(&self) -> i64 {
        self.minor
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_add(other.minor)
            .ok_or(MoneyError::TooLarge)?;
        Money::new(minor, self.currency)
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self
            .minor
            .checked_sub(other.minor)
            .ok_or(MoneyError::Negative)?;
        Money::new(minor, self.currency)
    }

    /// The amount of `quantity` units at this price.
    pub fn times(self, quantity: u32) -> Result<Money, MoneyError> {
        let minor = self
            .minor
            .checked_mul(i64::from(quantity))
            .ok_or(MoneyError::TooLarge)?;
        Money::new(minor, self.currency)
    }

    /// The plain decimal in the currency's own digits: `1250` EUR → `12.50`, `500` JPY → `500`.
    pub fn decimal(&self) -> String {
        self.currency.format_decimal(self.minor)
    }

    fn same_currency(&self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch)
        }
    }
}

/// Minor units as a plain decimal with `exponent` digits after the point (`1250`, 2 → `12.50`).
pub fn format_decimal(minor: i64, exponent: u32) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    let Some(scale) = 10u64.checked_pow(exponent).filter(|_| exponent > 0) else {
        return format!("{sign}{minor}");
    };
    format!(
        "{sign}{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = exponent as usize
    )
}

fn bounded(minor: i64) -> Result<i64, MoneyError> {
    if minor < 0 {
        Err(MoneyError::Negative)
    } else if minor > MAX_AMOUNT {
        Err(MoneyError::TooLarge)
    } else {
        Ok(minor)
    }
}

/// A line's amount (unit price × quantity) in minor units, or `None` when it is negative or
/// over [`MAX_AMOUNT`]: a line that could only be written by wrapping has no total.
pub fn line_total(unit_price: i64, quantity: u32) -> Option<i64> {
    let minor = unit_price.checked_mul(i64::from(quantity))?;
    bounded(minor).ok()
}

/// The sum of the given lines, or `None` when any line or the sum is out of bounds.
pub fn lines_total(lines: impl IntoIterator<Item = (i64, u32)>) -> Option<i64> {
    lines.into_iter().try_fold(0i64, |sum, (price, quantity)| {
        bounded(sum.checked_add(line_total(price, quantity)?)?).ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("c", "EUR").unwrap()
    }

    #[test]
    fn amounts_are_bounded_and_arithmetic_never_wraps() {
        let m = |minor| Money::new(minor, eur());
        type Case = (
            &'static str,
            Result<i64, MoneyError>,
            Result<i64, MoneyError>,
        );
        let cases: Vec<Case> = vec![
            (
                "a price inside the bounds is kept",
                m(1250).map(|x| x.minor()),
                Ok(1250),
            ),
            ("zero is an amount", m(0).map(|x| x.minor()), Ok(0)),
            (
                "the largest amount is accepted",
                m(MAX_AMOUNT).map(|x| x.minor()),
                Ok(MAX_AMOUNT),
            ),
            (
                "one past the largest amount is refused",
                m(MAX_AMOUNT + 1).map(|x| x.minor()),
                Err(MoneyError::TooLarge),
            ),
            (
                "i64::MAX is refused",
                m(i64::MAX).map(|x| x.minor()),
                Err(MoneyError::TooLarge),
            ),
            (
                "a negative amount is refused",
                m(-1).map(|x| x.minor()),
                Err(MoneyError::Negative),
            ),
            (
                "i64::MIN is refused",
                m(i64::MIN).map(|x| x.minor()),
                Err(MoneyError::Negative),
            ),
            (
                "adding stays exact",
                m(1).and_then(|a| a.checked_add(m(2)?)).map(|x| x.minor()),
                Ok(3),
            ),
            (
                "adding past the bound is refused",
                m(MAX_AMOUNT)
                    .and_then(|a| a.checked_add(m(1)?))
                    .map(|x| x.minor()),
                Err(MoneyError::TooLarge),
            ),
            (
                "subtracting below zero is refused",
                m(1).and_then(|a| a.checked_sub(m(2)?)).map(|x| x.minor()),
                Err(MoneyError::Negative),
            ),
            (
                "multiplying stays exact",
                m(1250).and_then(|a| a.times(3)).map(|x| x.minor()),
                Ok(3750),
            ),
            (
                "multiplying past the bound is refused",
                m(MAX_AMOUNT).and_then(|a| a.times(2)).map(|x| x.minor()),
                Err(MoneyError::TooLarge),
            ),
            (
                "multiplying by u32::MAX is refused, not wrapped",
                m(MAX_AMOUNT)
                    .and_then(|a| a.times(u32::MAX))
                    .map(|x| x.minor()),
                Err(MoneyError::TooLarge),
            ),
            (
                "two currencies are not added",
                m(1).and_then(|a| {
                    a.checked_add(Money::new(1, Currency::parse("c", "USD").unwrap())?)
                })
                .map(|x| x.minor()),
                Err(MoneyError::CurrencyMismatch),
            ),
        ];
        for (rule, got, want) in cases {
            assert_eq!(got, want, "{rule}");
        }
    }

    #[test]
    fn line_totals_refuse_what_only_wrapping_could_write() {
        let cases: &[(&str, i64, u32, Option<i64>)] = &[
            ("a line is price times quantity", 1250, 2, Some(2500)),
            ("a free line is zero", 0, 7, Some(0)),
            ("i64::MAX times two has no total", i64::MAX, 2, None),
            ("a line past the bound has no total", MAX_AMOUNT, 2, None),
            ("a negative price has no total", -1, 1, None),
        ];
        for (rule, price, quantity, want) in cases {
            assert_eq!(line_total(*price, *quantity), *want, "{rule}");
        }
        assert_eq!(lines_total([(1250, 2), (450, 2)]), Some(3400));
        assert_eq!(
            lines_total([(MAX_AMOUNT, 1), (1, 1)]),
            None,
            "a sum past the bound"
        );
        assert_eq!(lines_total([(i64::MAX, 2)]), None);
    }

    #[test]
    fn decimals_follow_the_currency() {
        let cases: &[(&str, i64, &str, &str)] = &[
            ("two decimals", 1250, "EUR", "12.50"),
            ("zero decimals", 500, "JPY", "500"),
            ("three decimals", 1500, "KWD", "1.500"),
            ("leading zeros of the fraction", 5, "EUR", "0.05"),
        ];
        for (rule, minor, code, want) in cases {
            let money = Money::new(*minor, Currency::parse("c", code).unwrap()).unwrap();
            assert_eq!(money.decimal(), *want, "{rule}");
        }
    }
}
