//! Offers (order bumps, upsells, downsells): their pricing rules on [`crate::Money`] and their
//! targeting rules, as pure policies with table tests. The `Offer` aggregate and the funnel
//! graph build on them (issue 11).

mod pricing;
mod targeting;

pub use pricing::{BumpPricing, Percent, PricingError, Quote, UpsellPricing, FULL};
pub use targeting::{CartView, Targeting, MAX_CATEGORY_LEN, MAX_DEPTH, MAX_RULES};
