//! An admin marks a cart converted (`POST /carts/{id}/convert`, `ocart cart mark-converted`).
//! It takes the same order path as an order signal: the cart converts, and an `Order` is
//! recorded (source `admin`, paid, attributed to the cart by its id), so what follows from an
//! order happens as for any other: the recovery opener credits (or stops) the cart's run, and
//! the recovery follow-ups stop the buyer's other open runs. Safe to repeat with the same order
//! id.

use ocart_domain::cart::{CartCommand, CartError, CartStatus};
use ocart_domain::order::{Attribution, AttributionOutcome, MatchedBy, OrderError, OrderFacts};
use ocart_domain::FieldError;
use ocart_projections::CommandMeta;

use super::StoreFailure;
use crate::core::Core;

/// The longest order id an admin may give.
pub const MAX_ORDER_ID_LEN: usize = 100;

/// What the admin asked for.
#[derive(Debug, Clone, Default)]
pub struct ConvertCart {
    pub cart_id: String,
    /// The store's order id; without one, `admin-{cart id}`.
    pub order_id: Option<String>,
    /// Revenue in minor units; without it, the cart's total is the order's.
    pub revenue: Option<i64>,
}

/// What the conversion did.
#[derive(Debug, Clone)]
pub struct Converted {
    pub cart_id: String,
    pub status: CartStatus,
    pub order_id: String,
    /// The log position of the last event written, for read-your-writes.
    pub position: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("cart {0}")]
    CartNotFound(String),
    /// The cart is closed (converted by another order, expired): `0` says which.
    #[error("{0}")]
    Closed(String),
    /// The order is recorded in another currency.
    #[error("{0}")]
    OrderConflict(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(ConvertError);

/// The order id an admin conversion records when the admin gave none.
pub fn admin_order_id(cart_id: &str) -> String {
    format!("admin-{cart_id}")
}

fn validate(input: &ConvertCart) -> Result<(), ConvertError> {
    let mut errors = Vec::new();
    if input.revenue.is_some_and(|r| r < 0) {
        errors.push(FieldError::new("revenue", "must not be negative"));
    }
    if input
        .order_id
        .as_ref()
        .is_some_and(|o| o.len() > MAX_ORDER_ID_LEN)
    {
        errors.push(FieldError::new(
            "order_id",
            "must be at most 100 characters",
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConvertError::Invalid(errors))
    }
}

/// Converts the cart and records its order.
pub async fn convert(
    core: &Core,
    input: ConvertCart,
    meta: &CommandMeta,
) -> Result<Converted, ConvertError> {
    validate(&input)?;
    let cart_id = input.cart_id;
    let order_id = input.order_id.unwrap_or_else(|| admin_order_id(&cart_id));
    let command = CartCommand::MarkConverted {
        at: meta.at,
        order_id: Some(order_id.clone()),
        revenue: input.revenue,
        placed_at: None,
    };
    let outcome =
        core.carts.execute(&cart_id, command, meta).await.map_err(
            |e| match StoreFailure::split(e) {
                Ok(failure) => ConvertError::Store(failure),
                Err(CartError::NotFound) => ConvertError::CartNotFound(cart_id.clone()),
                Err(other) => ConvertError::Closed(other.to_string()),
            },
        )?;
    let cart = &outcome.aggregate;
    let currency = cart
        .currency()
        .ok_or_else(|| anyhow::anyhow!("cart {cart_id} was converted but has no currency"))?;
    let facts = OrderFacts {
        order_id: order_id.clone(),
        status: "completed".into(),
        paid: true,
        payment_method: None,
        currency,
        total: input.revenue.or(cart.total()).unwrap_or(0),
        email_hash: cart.email_subject().map(|s| s.as_str().to_owned()),
        placed_at: meta.at,
        source: "admin".into(),
        coupon_codes: Vec::new(),
        modified_at: None,
        payment: None,
        offer_lines: Vec::new(),
    };
    let attribution = Attribution {
        cart_id: cart_id.clone(),
        matched_by: MatchedBy::CartId,
        outcome: if cart.converted_before_abandonment() {
            AttributionOutcome::CompletedBeforeAbandonment
        } else {
            AttributionOutcome::Recovered
        },
    };
    let status = cart.status();
    let recorded = super::record_order::record_order_facts(core, facts, Some(attribution), meta)
        .await
        .map_err(|e| match StoreFailure::split(e) {
            Ok(failure) => ConvertError::Store(failure),
            Err(e @ OrderError::CurrencyChanged(..)) => ConvertError::OrderConflict(e.to_string()),
        })?;
    Ok(Converted {
        cart_id,
        status,
        order_id,
        position: recorded.position.or(outcome.last_position()),
    })
}
