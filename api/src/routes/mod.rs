//! The HTTP routes, one module per area, each exposing `router()`.

pub mod abtests;
pub mod audit;
pub mod capture;
pub mod carts;
pub mod coupons;
pub mod deliverability;
pub mod funnels;
pub mod gateways;
pub mod links;
pub mod offers;
pub mod orders;
pub mod payment_webhooks;
pub mod privacy;
pub mod recovery;
pub mod reports;
pub mod settings;
pub mod stats;
pub mod system;
pub mod templates;
pub mod tokens;
pub mod upsells;

use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every authenticated and system route (the public capture route and the links are layered
/// separately). Each module registers its handlers with utoipa-axum's `routes!`, which routes
/// a handler and documents it in one step: the OpenAPI document is made from these routers
/// (`openapi::document`), so a route cannot be served without being documented.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(carts::router())
        .merge(settings::router())
        .merge(tokens::router())
        .merge(privacy::router())
        .merge(recovery::router())
        .merge(orders::router())
        .merge(offers::router())
        .merge(coupons::router())
        .merge(deliverability::router())
        .merge(funnels::router())
        .merge(reports::router())
        .merge(templates::router())
        .merge(audit::router())
        .merge(gateways::router())
        .merge(upsells::router())
        .merge(payment_webhooks::router())
        .merge(stats::router())
        .merge(abtests::router())
        .merge(system::router())
}

/// Keyset pagination cursors: `<unix micros>.<hex of the id>`, the sort key of a page's last
/// row. Every text of that shape (`^[0-9]{1,16}\.([0-9a-f]{2})*$`, as the OpenAPI document
/// says) is a cursor: it names a place in the order, whether or not a row sits there.
pub mod keyset {
    use super::*;

    pub fn encode(at: DateTime<Utc>, id: &str) -> String {
        format!("{}.{}", at.timestamp_micros(), hex::encode(id.as_bytes()))
    }

    /// `None` for anything not of the cursor's shape.
    pub fn decode(raw: &str) -> Option<(DateTime<Utc>, String)> {
        let (micros, id) = raw.split_once('.')?;
        if micros.is_empty() || micros.len() > 16 || !micros.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
        let id = String::from_utf8_lossy(&hex::decode(id).ok()?).into_owned();
        Some((at, id))
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        #[test]
        fn cursors_round_trip_and_refuse_other_shapes() {
            let at = DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
            assert_eq!(
                decode(&encode(at, "cart-1|x")),
                Some((at, "cart-1|x".into()))
            );
            for (rule, raw) in [
                ("an empty cursor is refused", ""),
                ("a cursor without a dot is refused", "123"),
                ("a sign is refused", "-1.ab"),
                ("upper-case hex is refused", "1.AB"),
                ("an odd number of hex digits is refused", "1.abc"),
                ("more than 16 digits is refused", "12345678901234567.ab"),
            ] {
                assert_eq!(decode(raw), None, "{rule}");
            }
        }

        proptest! {
            #[test]
            fn every_text_of_the_documented_shape_is_a_cursor(raw in "[0-9]{1,16}\\.([0-9a-f]{2}){0,20}") {
                prop_assert!(decode(&raw).is_some());
            }

            #[test]
            fn no_text_makes_the_cursor_parser_panic(raw in "\\PC{0,40}") {
                let _ = decode(&raw);
            }
        }
    }
}
