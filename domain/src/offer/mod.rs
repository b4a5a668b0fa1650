//! Offers (order bumps, upsells, downsells): their pricing rules on [`crate::Money`] and their
//! targeting rules, as pure policies with table tests; the `Offer` aggregate (definitions) and
//! the `BumpDecision` aggregate (a bump shown to a cart, accepted, declined).

mod aggregate;
mod bump;
mod index;
mod pricing;
mod targeting;

pub use aggregate::{
    BumpPosition, Offer, OfferCommand, OfferDefinition, OfferDisplay, OfferError, OfferEvent,
    OfferKind, OfferPricing, OfferProduct, OfferStatus, PercentValue, MAX_COPY_LEN,
    MAX_HEADLINE_LEN, MAX_IMAGE_URL_LEN, MAX_NAME_LEN, MAX_OFFER_QUANTITY, MAX_PAGE_TEMPLATE_BYTES,
};
pub use bump::{
    bump_decision_id, BumpAnswer, BumpCommand, BumpDecision, BumpError, BumpEvent, BumpLine,
};

pub use index::{Requirement, TargetingIndex};
pub use pricing::{BumpPricing, Percent, PricingError, Quote, UpsellPricing, FULL};
pub use targeting::{category_key, CartView, Targeting, MAX_CATEGORY_LEN, MAX_DEPTH, MAX_RULES};
