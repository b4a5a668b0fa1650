//! Whether a cart may be offered a recovery coupon: a pure rule over its lines.

use crate::values::CartItem;

/// A recovery step with a coupon offers one only if no line of the cart is a subscription
/// product (a subscription's renewals would carry the discount on). A cart whose lines cannot
/// be read is not decided here: the caller reports the stored data as invalid.
pub fn cart_may_get_coupon(items: &[CartItem]) -> bool {
    !items.iter().any(|item| item.subscription)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(subscription: bool) -> CartItem {
        CartItem {
            product_id: crate::ProductId::Number(42),
            variation_id: None,
            sku: None,
            name: "Mug".into(),
            quantity: 1,
            unit_price: 1250,
            categories: vec![],
            image_url: None,
            subscription,
        }
    }

    #[test]
    fn coupons_go_only_to_carts_without_subscriptions() {
        let cases: &[(&str, Vec<CartItem>, bool)] = &[
            (
                "a cart of plain products may get a coupon",
                vec![line(false), line(false)],
                true,
            ),
            (
                "a cart with one subscription line gets none",
                vec![line(false), line(true)],
                false,
            ),
            ("a cart of subscriptions gets none", vec![line(true)], false),
            ("an empty cart is not refused by this rule", vec![], true),
        ];
        for (rule, items, want) in cases {
            assert_eq!(cart_may_get_coupon(items), *want, "{rule}");
        }
    }
}
