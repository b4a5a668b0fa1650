//! Which carts an offer targets: predicates on the cart (`cart_min_total`, `product_in_cart`,
//! `category_in_cart`) in `all` / `any` / `none` groups, nested to a bounded depth. Pure: the
//! caller gives the cart's subtotal, products and categories.

use serde::{Deserialize, Serialize};

use crate::money::{Money, MAX_AMOUNT};
use crate::values::{Currency, FieldError, ProductId};

/// How deep groups may nest (a group in a group in a group …).
pub const MAX_DEPTH: usize = 4;
/// How many rules (groups and predicates) one targeting may hold in all.
pub const MAX_RULES: usize = 100;
/// The longest category slug a predicate may name.
pub const MAX_CATEGORY_LEN: usize = 200;

/// A targeting rule, as stored and as the API takes it:
/// `{"all": [{"cart_min_total": 5000}, {"none": [{"product_in_cart": 42}]}]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Targeting {
    /// Every rule holds (an empty `all` always holds).
    All(Vec<Targeting>),
    /// At least one rule holds (an empty `any` never holds).
    Any(Vec<Targeting>),
    /// No rule holds (an empty `none` always holds).
    None(Vec<Targeting>),
    /// The cart's subtotal, in minor units of the offer's currency, is at least this.
    CartMinTotal(i64),
    /// The cart holds this product (or a variation of it).
    ProductInCart(ProductId),
    /// The cart holds a product of this category (slug, compared without case).
    CategoryInCart(String),
}

/// How categories compare: trimmed, without ASCII case (`" Mugs "` is `mugs`), as
/// [`Targeting::matches`] compares them.
pub fn category_key(slug: &str) -> String {
    slug.trim().to_ascii_lowercase()
}

/// What targeting sees of a cart.
#[derive(Debug, Clone)]
pub struct CartView<'a> {
    pub subtotal: Money,
    pub products: &'a [ProductId],
    pub categories: &'a [String],
}

impl Default for Targeting {
    /// Every cart.
    fn default() -> Self {
        Self::All(Vec::new())
    }
}

impl Targeting {
    /// Whether the cart is targeted; `currency` is the offer's. A cart in another currency
    /// never meets a `cart_min_total`.
    pub fn matches(&self, cart: &CartView<'_>, currency: Currency) -> bool {
        match self {
            Self::All(rules) => rules.iter().all(|r| r.matches(cart, currency)),
            Self::Any(rules) => rules.iter().any(|r| r.matches(cart, currency)),
            Self::None(rules) => !rules.iter().any(|r| r.matches(cart, currency)),
            Self::CartMinTotal(min) => {
                cart.subtotal.currency() == currency && cart.subtotal.minor() >= *min
            }
            Self::ProductInCart(id) => cart.products.contains(id),
            Self::CategoryInCart(slug) => cart
                .categories
                .iter()
                .any(|c| c.trim().eq_ignore_ascii_case(slug.trim())),
        }
    }

    /// Checks the bounds, naming each rule that breaks one by its path (`targeting.all[1]`).
    pub fn validate(&self, field: &str) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut count = 0;
        self.check(field, 1, &mut count, &mut errors);
        if count > MAX_RULES {
            errors.push(FieldError::new(
                field,
                format!("holds {count} rules; at most {MAX_RULES}"),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn check(&self, path: &str, depth: usize, count: &mut usize, errors: &mut Vec<FieldError>) {
        *count += 1;
        let (name, rules) = match self {
            Self::All(r) => ("all", r),
            Self::Any(r) => ("any", r),
            Self::None(r) => ("none", r),
            Self::CartMinTotal(min) => {
                if !(0..=MAX_AMOUNT).contains(min) {
                    errors.push(FieldError::new(
                        format!("{path}.cart_min_total"),
                        format!("must be from 0 to {MAX_AMOUNT} minor units"),
                    ));
                }
                return;
            }
            Self::ProductInCart(_) => return,
            Self::CategoryInCart(slug) => {
                let len = slug.trim().chars().count();
                if len == 0 || len > MAX_CATEGORY_LEN {
                    errors.push(FieldError::new(
                        format!("{path}.category_in_cart"),
                        format!("must be 1 to {MAX_CATEGORY_LEN} characters"),
                    ));
                }
                return;
            }
        };
        if depth > MAX_DEPTH {
            errors.push(FieldError::new(
                format!("{path}.{name}"),
                format!("groups nest at most {MAX_DEPTH} deep"),
            ));
            return;
        }
        for (i, rule) in rules.iter().enumerate() {
            if *count > MAX_RULES {
                return;
            }
            rule.check(&format!("{path}.{name}[{i}]"), depth + 1, count, errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR).unwrap()
    }

    fn rule(json: &str) -> Targeting {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn carts_are_targeted_by_predicates_and_groups() {
        let products = [ProductId::Number(42), ProductId::text("sku-7").unwrap()];
        let categories = ["Shoes".to_owned()];
        let cart = CartView {
            subtotal: eur(5000),
            products: &products,
            categories: &categories,
        };
        let cases: &[(&str, &str, bool)] = &[
            ("an empty all targets every cart", r#"{"all":[]}"#, true),
            ("an empty any targets no cart", r#"{"any":[]}"#, false),
            ("an empty none targets every cart", r#"{"none":[]}"#, true),
            (
                "a subtotal at the minimum is met",
                r#"{"cart_min_total":5000}"#,
                true,
            ),
            (
                "a subtotal below the minimum is not",
                r#"{"cart_min_total":5001}"#,
                false,
            ),
            (
                "a product in the cart is found by number",
                r#"{"product_in_cart":42}"#,
                true,
            ),
            (
                "a product id as text is found as text",
                r#"{"product_in_cart":"sku-7"}"#,
                true,
            ),
            (
                "the number 42 is not the text \"42\"",
                r#"{"product_in_cart":"42"}"#,
                false,
            ),
            (
                "a category matches without case",
                r#"{"category_in_cart":"shoes"}"#,
                true,
            ),
            (
                "another category does not",
                r#"{"category_in_cart":"hats"}"#,
                false,
            ),
            (
                "all needs every rule",
                r#"{"all":[{"cart_min_total":1000},{"product_in_cart":1}]}"#,
                false,
            ),
            (
                "any needs one rule",
                r#"{"any":[{"cart_min_total":9000},{"product_in_cart":42}]}"#,
                true,
            ),
            (
                "none excludes carts holding a product",
                r#"{"none":[{"product_in_cart":42}]}"#,
                false,
            ),
            (
                "groups nest",
                r#"{"all":[{"cart_min_total":1000},{"none":[{"category_in_cart":"hats"}]}]}"#,
                true,
            ),
        ];
        for (name, json, expected) in cases {
            assert_eq!(
                rule(json).matches(&cart, Currency::EUR),
                *expected,
                "{name}"
            );
        }
        let usd = Currency::parse("c", "USD").unwrap();
        assert!(
            !rule(r#"{"cart_min_total":1}"#).matches(&cart, usd),
            "a cart in another currency never meets a minimum total"
        );
    }

    #[test]
    fn targeting_out_of_bounds_is_refused_by_path() {
        let deep = r#"{"all":[{"all":[{"all":[{"all":[{"all":[]}]}]}]}]}"#;
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("a plain rule is valid", r#"{"cart_min_total":0}"#, None),
            (
                "a negative minimum is refused",
                r#"{"all":[{"cart_min_total":-1}]}"#,
                Some("targeting.all[0].cart_min_total"),
            ),
            (
                "a minimum past the largest amount is refused",
                r#"{"cart_min_total":100000000001}"#,
                Some("targeting.cart_min_total"),
            ),
            (
                "an empty category is refused",
                r#"{"any":[{"category_in_cart":" "}]}"#,
                Some("targeting.any[0].category_in_cart"),
            ),
            (
                "groups past the depth are refused",
                deep,
                Some("targeting.all[0].all[0].all[0].all[0].all"),
            ),
        ];
        for (name, json, expected) in cases {
            let got = rule(json)
                .validate("targeting")
                .err()
                .map(|e| e[0].field.clone());
            assert_eq!(got.as_deref(), *expected, "{name}");
        }
        let many = Targeting::Any(vec![Targeting::CartMinTotal(1); MAX_RULES]);
        assert!(
            many.validate("t").is_err(),
            "more than the most rules is refused"
        );
    }
}
