//! OCart's domain: aggregates, validated value types and pure policies.
//!
//! Architecture invariant: this crate does no IO. It never depends on sqlx, axum, async-nats,
//! reqwest or tokio's net/fs features (`platform::the_domain_crate_does_no_io` in the end-to-end
//! tests checks the dependency tree). Time comes in through commands or the [`Clock`] port.
#![forbid(unsafe_code)]

/// A/B tests: the `AbTest` and `Assignment` aggregates and the deterministic split.
pub mod abtest;
/// The `Cart` aggregate: capture, consent withdrawal, abandonment, conversion, expiry.
pub mod cart;
/// The `Clock` port and its system and manual implementations.
mod clock;
/// Funnels: steps, branches and the rules their graph keeps.
pub mod funnel;
/// The `GatewaySecrets` aggregate: rotations of webhook secrets and token signing keys.
pub mod gateway_secret;
/// Masking of personal data for readers without `ocart_view_personal_data`.
pub mod masking;
/// Metadata keys every event carries, and the per-aggregate hash chain.
pub mod metadata;
/// Money in minor units with checked arithmetic and the bounds OCart accepts.
mod money;
/// Offers (bumps, upsells, downsells): pricing rules on `Money`, one rounding rule.
pub mod offer;
/// The `Order` aggregate: store orders and the cart each converted.
pub mod order;
/// Sealed personal data and data-subject hashes (the crypto itself lives outside the domain).
mod privacy;
/// Abandoned-cart recovery: sequence steps and their timing rules.
pub mod recovery;
/// The `Settings` aggregate: the groups and defaults of OCart's settings reference.
pub mod settings;
/// A/B test statistics: frequentist, Bayesian (Beta-Binomial) and the special functions they
/// need, checked against shipped high-precision vectors.
pub mod stats;
/// The `Subject` aggregate: erasure of one data subject.
pub mod subject;
/// The `ApiToken` aggregate and the capabilities a token can carry.
pub mod token;
/// One-click upsells and downsells: the `UpsellAcceptance` aggregate (decision, charge,
/// store order, refunds).
pub mod upsell;
/// Validated values built at the edge: email, phone, currency, money, cart items.
mod values;

pub use clock::{Clock, ManualClock, SystemClock};
pub use money::{
    format_decimal, line_total, lines_total, Money, MoneyError, MAX_AMOUNT, MAX_QUANTITY,
};
pub use privacy::{PersonalField, Sealed, SubjectHash};
pub use values::{
    CartItem, CartTotals, Currency, Email, FieldError, Phone, ProductId, Source, Stage,
    MAX_CART_ITEMS, MAX_PRODUCT_ID_LEN,
};
