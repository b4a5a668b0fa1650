//! An inverted index over many targetings (a store's active bumps): for a cart, the few whose
//! targeting can match at all, so a checkout checks ten offers instead of a thousand. Sound by
//! construction: a targeting is left out only when [`Targeting::requirement`] proves it cannot
//! match the cart; the caller still checks each candidate with [`Targeting::matches`].

use std::collections::HashMap;

use super::targeting::{category_key, CartView, Targeting};
use crate::values::ProductId;

/// What a cart must hold for a targeting to match: one of `products`, or a product of one of
/// `categories` (trimmed, ASCII-lowercased). Empty: it never matches (an empty `any`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirement {
    pub products: Vec<ProductId>,
    pub categories: Vec<String>,
}

impl Requirement {
    fn len(&self) -> usize {
        self.products.len() + self.categories.len()
    }
}

impl Targeting {
    /// A condition on the cart's contents every cart this targeting matches meets, or `None`
    /// when there is none (rules on the total alone, `none` groups, an empty `all`).
    pub fn requirement(&self) -> Option<Requirement> {
        match self {
            // Each rule must hold: the narrowest rule's requirement is the group's.
            Self::All(rules) => rules
                .iter()
                .filter_map(Self::requirement)
                .min_by_key(Requirement::len),
            // One rule must hold: the group needs one of theirs, if every rule has one.
            Self::Any(rules) => {
                let mut all = Requirement::default();
                for rule in rules {
                    let r = rule.requirement()?;
                    all.products.extend(r.products);
                    all.categories.extend(r.categories);
                }
                Some(all)
            }
            Self::None(_) | Self::CartMinTotal(_) => None,
            Self::ProductInCart(id) => Some(Requirement {
                products: vec![id.clone()],
                categories: Vec::new(),
            }),
            Self::CategoryInCart(slug) => Some(Requirement {
                products: Vec::new(),
                categories: vec![category_key(slug)],
            }),
        }
    }
}

/// The index: targetings by the products and categories they require, and those that require
/// none.
#[derive(Debug, Clone, Default)]
pub struct TargetingIndex {
    unconstrained: Vec<usize>,
    by_product: HashMap<ProductId, Vec<usize>>,
    by_category: HashMap<String, Vec<usize>>,
}

impl TargetingIndex {
    /// Indexes `targetings`; a candidate is named by its position in this sequence.
    pub fn new<'a>(targetings: impl IntoIterator<Item = &'a Targeting>) -> Self {
        let mut index = Self::default();
        for (i, targeting) in targetings.into_iter().enumerate() {
            match targeting.requirement() {
                None => index.unconstrained.push(i),
                Some(required) => {
                    for product in required.products {
                        let at = index.by_product.entry(product).or_default();
                        if at.last() != Some(&i) {
                            at.push(i);
                        }
                    }
                    for category in required.categories {
                        let at = index.by_category.entry(category).or_default();
                        if at.last() != Some(&i) {
                            at.push(i);
                        }
                    }
                }
            }
        }
        index
    }

    /// The positions of the targetings that may match `cart`, ascending, each once.
    pub fn candidates(&self, cart: &CartView<'_>) -> Vec<usize> {
        let mut found = self.unconstrained.clone();
        for product in cart.products {
            if let Some(at) = self.by_product.get(product) {
                found.extend_from_slice(at);
            }
        }
        for category in cart.categories {
            if let Some(at) = self.by_category.get(&category_key(category)) {
                found.extend_from_slice(at);
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{Currency, Money};

    fn rule(json: &str) -> Targeting {
        serde_json::from_str(json).unwrap()
    }

    fn p(n: u64) -> ProductId {
        ProductId::Number(n)
    }

    /// A targeting's JSON and the products and categories it requires.
    type Case<'a> = (&'a str, Option<(&'a [u64], &'a [&'a str])>);

    #[test]
    fn requirements_of_each_shape() {
        let cases: &[Case] = &[
            (r#"{"all": []}"#, None),
            (r#"{"cart_min_total": 100}"#, None),
            (r#"{"none": [{"product_in_cart": 1}]}"#, None),
            (r#"{"product_in_cart": 7}"#, Some((&[7], &[]))),
            (r#"{"category_in_cart": " Mugs "}"#, Some((&[], &["mugs"]))),
            (
                r#"{"all": [{"cart_min_total": 100}, {"product_in_cart": 7}]}"#,
                Some((&[7], &[])),
            ),
            // The narrowest rule of an `all`.
            (
                r#"{"all": [{"any": [{"product_in_cart": 1}, {"product_in_cart": 2}]}, {"category_in_cart": "tea"}]}"#,
                Some((&[], &["tea"])),
            ),
            (
                r#"{"any": [{"product_in_cart": 1}, {"category_in_cart": "tea"}]}"#,
                Some((&[1], &["tea"])),
            ),
            // One rule of an `any` without a requirement: the group has none.
            (
                r#"{"any": [{"product_in_cart": 1}, {"cart_min_total": 5}]}"#,
                None,
            ),
            // An empty `any` never holds: nothing satisfies it.
            (r#"{"any": []}"#, Some((&[], &[]))),
        ];
        for (json, want) in cases {
            let want = want.map(|(products, categories)| Requirement {
                products: products.iter().map(|&n| p(n)).collect(),
                categories: categories.iter().map(|c| c.to_string()).collect(),
            });
            assert_eq!(rule(json).requirement(), want, "{json}");
        }
    }

    #[test]
    fn candidates_are_the_targetings_the_cart_can_meet_in_order() {
        let targetings = [
            rule(r#"{"product_in_cart": 42}"#),
            rule(r#"{"cart_min_total": 100}"#),
            rule(r#"{"product_in_cart": 7}"#),
            rule(r#"{"any": [{"product_in_cart": 42}, {"category_in_cart": "Mugs"}]}"#),
            rule(r#"{"any": []}"#),
        ];
        let index = TargetingIndex::new(&targetings);
        let cart = |products: &[ProductId], categories: &[String]| {
            index.candidates(&CartView {
                subtotal: Money::new(500, Currency::EUR).unwrap(),
                products,
                categories,
            })
        };
        assert_eq!(cart(&[p(42)], &[]), vec![0, 1, 3]);
        assert_eq!(cart(&[p(7)], &["MUGS ".into()]), vec![1, 2, 3]);
        assert_eq!(cart(&[], &[]), vec![1]);
    }

    fn targeting() -> impl Strategy<Value = Targeting> {
        let leaf = prop_oneof![
            (0i64..300).prop_map(Targeting::CartMinTotal),
            (0u64..6).prop_map(|n| Targeting::ProductInCart(ProductId::Number(n))),
            prop::sample::select(vec!["tea", "Mugs", " cups"])
                .prop_map(|c| Targeting::CategoryInCart(c.to_owned())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Targeting::All),
                prop::collection::vec(inner.clone(), 0..4).prop_map(Targeting::Any),
                prop::collection::vec(inner, 0..3).prop_map(Targeting::None),
            ]
        })
    }

    proptest! {
        /// The index never drops a targeting that matches: checking the candidates finds what
        /// checking every targeting finds.
        #[test]
        fn the_candidates_hold_every_match(
            targetings in prop::collection::vec(targeting(), 0..30),
            products in prop::collection::vec((0u64..8).prop_map(ProductId::Number), 0..4),
            categories in prop::collection::vec(prop::sample::select(vec!["TEA", "mugs ", "plates"]), 0..3),
            subtotal in 0i64..400,
        ) {
            let categories: Vec<String> = categories.into_iter().map(str::to_owned).collect();
            let cart = CartView {
                subtotal: Money::new(subtotal, Currency::EUR).unwrap(),
                products: &products,
                categories: &categories,
            };
            let all: Vec<usize> = targetings
                .iter()
                .enumerate()
                .filter(|(_, t)| t.matches(&cart, Currency::EUR))
                .map(|(i, _)| i)
                .collect();
            let index = TargetingIndex::new(&targetings);
            let via_index: Vec<usize> = index
                .candidates(&cart)
                .into_iter()
                .filter(|&i| targetings[i].matches(&cart, Currency::EUR))
                .collect();
            prop_assert_eq!(via_index, all);
        }
    }
}
