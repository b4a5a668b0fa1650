//! Order bumps at checkout: which active bumps a cart is eligible for (targeting, currency and
//! pricing), with their quotes, and the shopper's answer to one (shown, accepted, declined).
//!
//! Eligibility is on the checkout's path, so it stays cheap: the active bumps are kept in
//! memory ([`BumpCache`], reloaded when older than 250 ms) and a cart is one lookup by id
//! (a session token names its cart through `cart_id_for_session`). Showing, accepting and
//! declining are recorded once per offer and cart by the `BumpDecision` aggregate; a repeat
//! answers the line recorded first.

use std::sync::Arc;
use std::time::Duration;

use ocart_domain::abtest::{self, Surface};
use ocart_domain::cart::cart_id_for_session;
use ocart_domain::offer::{
    bump_decision_id, BumpAnswer, BumpCommand, BumpDecision, BumpLine, CartView, OfferDefinition,
    TargetingIndex,
};
use ocart_domain::{CartItem, CartTotals, Currency, FieldError, Money, ProductId};
use ocart_projections::queries::CartRow;
use ocart_projections::{CommandMeta, CommandOutcome};
use serde::Serialize;

use super::StoreFailure;
use crate::core::Core;

/// How long the active bumps are served from memory.
pub const BUMP_CACHE_TTL: Duration = Duration::from_millis(250);

/// An active bump as the cache holds it.
#[derive(Debug, Clone)]
pub struct ActiveBump {
    pub offer_id: String,
    pub definition: OfferDefinition,
}

/// The active bumps in the `offers` table's order, with the index of their targeting.
#[derive(Debug, Default)]
pub struct ActiveBumps {
    bumps: Vec<ActiveBump>,
    index: TargetingIndex,
}

impl ActiveBumps {
    fn new(bumps: Vec<ActiveBump>) -> Self {
        let index = TargetingIndex::new(bumps.iter().map(|b| &b.definition.targeting));
        Self { bumps, index }
    }

    /// The active bump with this offer id.
    fn by_id(&self, offer_id: &str) -> Option<&ActiveBump> {
        self.bumps.iter().find(|b| b.offer_id == offer_id)
    }

    /// The bumps whose targeting may match the cart (each still to be checked), in order.
    fn candidates<'a>(&'a self, cart: &CartView<'_>) -> impl Iterator<Item = &'a ActiveBump> {
        self.index
            .candidates(cart)
            .into_iter()
            .filter_map(|i| self.bumps.get(i))
    }
}

/// The active bumps, read from the `offers` table at most every [`BUMP_CACHE_TTL`].
#[derive(Debug, Default)]
pub struct BumpCache {
    loaded: crate::snapshot::Refreshing<ActiveBumps>,
}

impl BumpCache {
    /// The active bumps, from memory when fresh (one reader refreshes a stale list while the
    /// others use it).
    pub async fn active(&self, core: &Core) -> Result<Arc<ActiveBumps>, BumpsError> {
        self.loaded
            .get(BUMP_CACHE_TTL, || async {
                let rows = ocart_projections::queries::offers::active_bumps(&core.db).await?;
                let mut bumps = Vec::with_capacity(rows.len());
                for row in rows {
                    let definition = definition_of_row(&row)
                        .map_err(|e| anyhow::anyhow!("stored offer {}: {e}", row.id))?;
                    bumps.push(ActiveBump {
                        offer_id: row.id,
                        definition,
                    });
                }
                Ok::<_, BumpsError>(ActiveBumps::new(bumps))
            })
            .await
    }

    /// Forgets the active bumps (after a change this instance made).
    pub fn invalidate(&self) {
        self.loaded.invalidate();
    }
}

/// The definition an `offers` row stores.
pub fn definition_of_row(
    row: &ocart_projections::queries::offers::OfferRow,
) -> Result<OfferDefinition, serde_json::Error> {
    serde_json::from_value(serde_json::json!({
        "kind": row.kind,
        "name": row.name,
        "currency": row.currency,
        "product": row.product.0,
        "pricing": row.pricing.0,
        "targeting": row.targeting.0,
        "display": row.display.0,
        "page_template": row.page_template,
    }))
}

/// A bump a cart may be offered, priced for that cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EligibleBump {
    /// The offer's id.
    pub offer_id: String,
    /// Where the checkout shows it: `above_payment`, `in_shipping` or `in_summary`.
    pub position: String,
    /// The bump's headline.
    pub headline: String,
    /// The bump's copy.
    pub copy: String,
    /// The bump's image.
    pub image_url: Option<String>,
    /// The product added to the order when accepted.
    #[schema(value_type = crate::routes::capture::ProductIdBody)]
    pub product_id: ProductId,
    /// How many of the product.
    pub quantity: u32,
    /// What the shopper pays for the bump, in minor units.
    pub price: i64,
    /// The product's regular price, in minor units, when there is one.
    pub regular: Option<i64>,
    /// `regular − price` in minor units, never negative.
    pub saving: i64,
    /// ISO 4217 code of the price.
    pub currency: String,
    /// The running bump test this bump is served by (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_id: Option<String>,
    /// The cart's variant in that test (absent when none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// What bump eligibility sees of a cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartFacts {
    /// The cart's subtotal.
    pub subtotal: Money,
    /// The products in the cart (and their variations).
    pub products: Vec<ProductId>,
    /// The categories of the cart's products.
    pub categories: Vec<String>,
}

impl CartFacts {
    /// The view targeting rules match against.
    pub fn view(&self) -> CartView<'_> {
        CartView {
            subtotal: self.subtotal,
            products: &self.products,
            categories: &self.categories,
        }
    }
}

/// The facts of a cart row, or `None` when its currency, items or totals cannot be read.
pub fn cart_facts(cart: &CartRow) -> Option<CartFacts> {
    let currency = Currency::parse("currency", &cart.currency).ok()?;
    let items: Vec<CartItem> = serde_json::from_value(cart.items.0.clone()).ok()?;
    let totals: Option<CartTotals> = serde_json::from_value(cart.totals.0.clone()).ok();
    let subtotal = match totals {
        Some(t) => t.subtotal,
        None => ocart_domain::lines_total(items.iter().map(|i| (i.unit_price, i.quantity)))?,
    };
    let subtotal = Money::new(subtotal, currency).ok()?;
    let mut products = Vec::new();
    let mut categories: Vec<String> = Vec::new();
    for item in &items {
        products.push(item.product_id.clone());
        if let Some(variation) = &item.variation_id {
            products.push(variation.clone());
        }
        for c in &item.categories {
            if !categories.iter().any(|k| k.eq_ignore_ascii_case(c)) {
                categories.push(c.clone());
            }
        }
    }
    products.sort();
    products.dedup();
    Some(CartFacts {
        subtotal,
        products,
        categories,
    })
}

/// Why a bump request failed.
#[derive(Debug, thiserror::Error)]
pub enum BumpsError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// No such cart (or session token).
    #[error("no such cart")]
    CartNotFound,
    /// No such bump, or it is archived.
    #[error("no such bump")]
    OfferNotFound,
    /// The bump does not apply to this cart (targeting, currency or pricing).
    #[error("the bump does not apply to this cart")]
    NotEligible,
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(BumpsError);

/// The active bumps `cart` is eligible for, with their quotes: the cart is open (active or
/// abandoned), in the bump's currency, targeted, and the bump prices for its subtotal.
pub async fn eligible_for_cart(
    core: &Core,
    cart: &CartRow,
) -> Result<Vec<EligibleBump>, BumpsError> {
    if !takes_bumps(cart) {
        return Ok(Vec::new());
    }
    let Some(facts) = cart_facts(cart) else {
        return Ok(Vec::new());
    };
    eligible_for_facts(core, &facts, &cart.cart_id).await
}

/// Whether bumps are offered to the cart: it is open (active or abandoned).
pub fn takes_bumps(cart: &CartRow) -> bool {
    matches!(cart.status.as_str(), "active" | "abandoned")
}

/// [`eligible_for_cart`] for an open cart's facts (`cart_id`: the cart, the unit of bump
/// tests).
///
/// Running bump tests: an eligible bump a test targets (`abtest::offer_test`) assigns the
/// cart and is replaced by its variant's offer when that offer is an active bump that prices
/// for the cart (else the control's offer is shown); the bump carries the test and the
/// variant. The offers only other variants serve (`abtest::held_back_offers`) are shown only
/// that way. With no bump test running, the running tests' snapshot says so and nothing else
/// is read.
pub async fn eligible_for_facts(
    core: &Core,
    facts: &CartFacts,
    cart_id: &str,
) -> Result<Vec<EligibleBump>, BumpsError> {
    let bumps = core.bump_cache.active(core).await?;
    let running = core.assigner.running(core).await?;
    if !running.on(Surface::Bump) {
        return Ok(bumps
            .candidates(&facts.view())
            .filter_map(|bump| eligible(bump, facts))
            .collect());
    }
    let held = abtest::held_back_offers(running.tests(), Surface::Bump);
    let mut out: Vec<EligibleBump> = Vec::new();
    for bump in bumps.candidates(&facts.view()) {
        if held.contains(&bump.offer_id.as_str()) {
            continue;
        }
        let Some(control) = eligible(bump, facts) else {
            continue;
        };
        let Some(test) = abtest::offer_test(running.tests(), Surface::Bump, &bump.offer_id) else {
            out.push(control);
            continue;
        };
        let assigned = super::assign::assign(core, test, cart_id).await?;
        let mut served = bumps
            .by_id(&assigned.variant.serves)
            .filter(|_| assigned.index > 0)
            .and_then(|variant| eligible(variant, facts))
            .unwrap_or(control);
        served.test_id = Some(test.id.clone());
        served.variant = Some(assigned.variant.key.clone());
        if !out.iter().any(|b| b.offer_id == served.offer_id) {
            out.push(served);
        }
    }
    Ok(out)
}

/// The bump priced for the cart, or `None` when it does not apply.
fn eligible(bump: &ActiveBump, facts: &CartFacts) -> Option<EligibleBump> {
    let def = &bump.definition;
    if def.currency != facts.subtotal.currency()
        || !def.targeting.matches(&facts.view(), def.currency)
    {
        return None;
    }
    let quote = def.quote_for(facts.subtotal).ok()?;
    Some(EligibleBump {
        offer_id: bump.offer_id.clone(),
        position: def.display.position.as_str().to_owned(),
        headline: def.display.headline.clone(),
        copy: def.display.copy.clone(),
        image_url: def.display.image_url.clone(),
        product_id: def.product.product_id.clone(),
        quantity: def.product.quantity,
        price: quote.price.minor(),
        regular: quote.regular.map(|r| r.minor()),
        saving: quote.saving.minor(),
        currency: def.currency.as_str().to_owned(),
        test_id: None,
        variant: None,
    })
}

/// Which cart a bump request is about.
#[derive(Debug, Clone)]
pub enum CartRef {
    /// The checkout's session token (public requests).
    SessionToken(String),
    /// A cart id (bearer requests).
    CartId(String),
}

impl CartRef {
    /// Exactly one of a session token or a cart id.
    pub fn one_of(
        session_token: Option<String>,
        cart_id: Option<String>,
    ) -> Result<Self, BumpsError> {
        match (session_token, cart_id) {
            (Some(token), None) => {
                let ok = (16..=128).contains(&token.len())
                    && token
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !ok {
                    return Err(BumpsError::Invalid(vec![FieldError::new(
                        "session_token",
                        "must be 16 to 128 characters of A-Z, a-z, 0-9, - and _",
                    )]));
                }
                Ok(Self::SessionToken(token))
            }
            (None, Some(id)) => Ok(Self::CartId(id)),
            _ => Err(BumpsError::Invalid(vec![FieldError::new(
                "session_token",
                "give session_token or cart_id, not both",
            )])),
        }
    }

    fn cart_id(&self) -> String {
        match self {
            Self::SessionToken(token) => cart_id_for_session(token).to_string(),
            Self::CartId(id) => id.clone(),
        }
    }
}

/// The cart a request names, in one lookup.
pub async fn find_cart(core: &Core, cart: &CartRef) -> Result<CartRow, BumpsError> {
    let id = cart.cart_id();
    ocart_projections::queries::get_cart(&core.db, &id)
        .await?
        .ok_or(BumpsError::CartNotFound)
}

/// The eligible bumps of a cart, each recorded as shown to it (once per offer and cart).
pub async fn show(
    core: &Core,
    cart: &CartRef,
    meta: &CommandMeta,
) -> Result<Vec<EligibleBump>, BumpsError> {
    let row = find_cart(core, cart).await?;
    let eligible = eligible_for_cart(core, &row).await?;
    for bump in &eligible {
        let line = line_of(bump, &row.cart_id);
        execute(
            core,
            &line,
            BumpCommand::Show {
                line: line.clone(),
                at: meta.at,
            },
            meta,
        )
        .await?;
    }
    Ok(eligible)
}

/// The line the store adds to the order for an accepted bump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderLine {
    #[schema(value_type = crate::routes::capture::ProductIdBody)]
    pub product_id: ProductId,
    pub quantity: u32,
    /// What the shopper pays for the line, in minor units.
    pub price: i64,
    pub currency: String,
    /// The line's meta: `{"_ocart_offer_id": offer id}`, what counts its revenue.
    #[schema(value_type = Object)]
    pub meta: serde_json::Value,
}

/// What accepting or declining answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub answer: BumpAnswer,
    pub line: OrderLine,
    /// The log position of the event written, `None` when it was a repeat.
    pub position: Option<i64>,
}

/// Records the shopper's answer to bump `offer_id` in the cart. Accepting needs the bump to
/// apply to the cart now, unless it was accepted before (then the first line is answered);
/// declining needs it shown, accepted or applicable.
pub async fn decide(
    core: &Core,
    offer_id: &str,
    cart: &CartRef,
    answer: BumpAnswer,
    meta: &CommandMeta,
) -> Result<Decided, BumpsError> {
    let row = find_cart(core, cart).await?;
    let id = bump_decision_id(offer_id, &row.cart_id);
    let (decision, _, _) =
        core.bumps
            .load(&id)
            .await
            .map_err(|e| match StoreFailure::split(e) {
                Ok(failure) => BumpsError::Store(failure),
                Err(never) => match never {},
            })?;
    let previous = decision
        .answer()
        .filter(|(a, _)| *a == answer)
        .map(|(_, line)| line.clone());
    let line = match previous {
        Some(line) => line,
        None => {
            let current = eligible_for_cart(core, &row)
                .await?
                .into_iter()
                .find(|b| b.offer_id == offer_id)
                .map(|b| line_of(&b, &row.cart_id));
            match (current, answer) {
                (Some(line), _) => line,
                (None, BumpAnswer::Declined) => decision
                    .answer()
                    .map(|(_, l)| l.clone())
                    .or_else(|| decision.shown().cloned())
                    .ok_or(BumpsError::NotEligible)?,
                (None, BumpAnswer::Accepted) => {
                    let known = ocart_projections::queries::offers::get_offer(&core.db, offer_id)
                        .await?
                        .is_some_and(|o| o.kind == "bump" && o.status == "active");
                    return Err(if known {
                        BumpsError::NotEligible
                    } else {
                        BumpsError::OfferNotFound
                    });
                }
            }
        }
    };
    let command = match answer {
        BumpAnswer::Accepted => BumpCommand::Accept {
            line: line.clone(),
            at: meta.at,
        },
        BumpAnswer::Declined => BumpCommand::Decline {
            line: line.clone(),
            at: meta.at,
        },
    };
    let outcome = execute(core, &line, command, meta).await?;
    let line = outcome
        .aggregate
        .answer()
        .map(|(_, l)| l.clone())
        .unwrap_or(line);
    Ok(Decided {
        answer,
        position: outcome.last_position(),
        line: OrderLine {
            meta: serde_json::json!({ "_ocart_offer_id": line.offer_id }),
            product_id: line.product_id,
            quantity: line.quantity,
            price: line.price,
            currency: line.currency,
        },
    })
}

fn line_of(bump: &EligibleBump, cart_id: &str) -> BumpLine {
    BumpLine {
        offer_id: bump.offer_id.clone(),
        cart_id: cart_id.to_owned(),
        price: bump.price,
        currency: bump.currency.clone(),
        quantity: bump.quantity,
        product_id: bump.product_id.clone(),
    }
}

async fn execute(
    core: &Core,
    line: &BumpLine,
    command: BumpCommand,
    meta: &CommandMeta,
) -> Result<CommandOutcome<BumpDecision>, BumpsError> {
    let id = bump_decision_id(&line.offer_id, &line.cart_id);
    core.bumps
        .execute(&id, command, meta)
        .await
        .map_err(|e| match StoreFailure::split(e) {
            Ok(failure) => BumpsError::Store(failure),
            Err(never) => match never {},
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usecases::testing::answer;
    use axum::http::StatusCode;

    #[test]
    fn each_failure_has_its_status() {
        assert_eq!(answer(BumpsError::CartNotFound).0, StatusCode::NOT_FOUND);
        assert_eq!(answer(BumpsError::OfferNotFound).0, StatusCode::NOT_FOUND);
        assert_eq!(answer(BumpsError::NotEligible).0, StatusCode::CONFLICT);
        let Err(invalid) = CartRef::one_of(None, None) else {
            panic!("no cart was accepted");
        };
        assert_eq!(answer(invalid).0, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(CartRef::one_of(Some("short".into()), None).is_err());
    }
}
