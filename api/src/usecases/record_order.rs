//! Recording an order signal (`POST /ocart/v1/orders`, the WooCommerce order webhook): the
//! order is recorded, the cart it came from converts once it is paid, and the buyer's other
//! open runs are stopped.
//!
//! Recording an order is safe to repeat (a webhook retried after a crash, a replayed
//! delivery): the cart conversion comes first and is idempotent for the same order id, then
//! the order is recorded with the attribution the conversion answered. The buyer's other open
//! runs are stopped by the recovery follow-ups (`processors::recovery::followups`) when they
//! reach the recorded order, so an admin conversion or a replay gets the same effect. A repeat
//! finds each step done and changes nothing. Signals are ordered by the store's modification
//! time: a stale one changes nothing.

use chrono::{DateTime, Duration, Utc};
use ocart_domain::cart::{cart_id_for_session, CartCommand, CartError, CartStatus};
use ocart_domain::order::{
    is_paid, order_id_for, signal_applies, Attribution, AttributionOutcome, MatchedBy, OfferLine,
    OrderCommand, OrderError, OrderFacts, PaymentRef,
};
use ocart_domain::{Currency, Email, FieldError, Money, ProductId, MAX_AMOUNT, MAX_QUANTITY};
use ocart_projections::queries::recovery as q;
use ocart_projections::{CommandError, CommandMeta};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::StoreFailure;
use crate::core::Core;

/// An order signal as the store sent it (order API, or a WooCommerce order in these terms),
/// before validation.
#[derive(Debug, Clone, Default)]
pub struct OrderInput {
    pub order_id: String,
    pub status: String,
    pub payment_method: Option<String>,
    /// ISO 4217 code.
    pub currency: String,
    /// Minor units.
    pub total: i64,
    pub email: Option<String>,
    /// Default: the time of the request.
    pub placed_at: Option<DateTime<Utc>>,
    pub modified_at: Option<DateTime<Utc>>,
    pub cart_id: Option<String>,
    pub session_token: Option<String>,
    pub restore_token: Option<String>,
    pub coupon_codes: Vec<String>,
    /// The saved payment the order was paid with (for one-click upsells).
    pub payment: Option<PaymentInput>,
    /// The order's lines; those with an `offer_id` count the offer's revenue.
    pub lines: Vec<LineInput>,
}

/// A saved payment as the store sent it.
#[derive(Debug, Clone, Default)]
pub struct PaymentInput {
    /// `stripe`, `paypal` or `sandbox`.
    pub gateway: String,
    pub customer: Option<String>,
    pub payment_method: String,
}

/// An order line as the store sent it.
#[derive(Debug, Clone)]
pub struct LineInput {
    pub product_id: ProductId,
    pub quantity: u32,
    /// The line's total in minor units.
    pub total: i64,
    /// The OCart offer the line came from (line meta `_ocart_offer_id`).
    pub offer_id: Option<String>,
}

/// The most lines an order signal may carry.
pub const MAX_ORDER_LINES: usize = 1000;
/// The longest gateway-side id of a saved payment (customer, payment method).
pub const MAX_PAYMENT_ID_LEN: usize = 255;

/// The saved payment, checked: a known gateway, ids of printable ASCII.
fn validate_payment(input: PaymentInput, errors: &mut Vec<FieldError>) -> Option<PaymentRef> {
    let gateway = input.gateway.trim().to_ascii_lowercase();
    let mut ok = true;
    if !matches!(gateway.as_str(), "stripe" | "paypal" | "sandbox") {
        errors.push(FieldError::new(
            "payment.gateway",
            "must be stripe, paypal or sandbox",
        ));
        ok = false;
    }
    let id = |field: &str, raw: &str, errors: &mut Vec<FieldError>| {
        let good = !raw.is_empty()
            && raw.len() <= MAX_PAYMENT_ID_LEN
            && raw.bytes().all(|b| b.is_ascii_graphic());
        if !good {
            errors.push(FieldError::new(
                field,
                format!("must be 1 to {MAX_PAYMENT_ID_LEN} printable ASCII characters"),
            ));
        }
        good
    };
    ok &= id("payment.payment_method", &input.payment_method, errors);
    if let Some(customer) = &input.customer {
        ok &= id("payment.customer", customer, errors);
    }
    ok.then_some(PaymentRef {
        gateway,
        customer: input.customer,
        payment_method: input.payment_method,
    })
}

/// The lines that came from an offer, checked.
fn validate_lines(lines: Vec<LineInput>, errors: &mut Vec<FieldError>) -> Vec<OfferLine> {
    if lines.len() > MAX_ORDER_LINES {
        errors.push(FieldError::new(
            "lines",
            format!("at most {MAX_ORDER_LINES} lines"),
        ));
        return Vec::new();
    }
    let mut offer_lines = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            errors.push(FieldError::new(
                format!("lines[{i}].quantity"),
                format!("must be from 1 to {MAX_QUANTITY}"),
            ));
        }
        if !(0..=MAX_AMOUNT).contains(&line.total) {
            errors.push(FieldError::new(
                format!("lines[{i}].total"),
                format!("must be from 0 to {MAX_AMOUNT} minor units"),
            ));
        }
        let Some(offer_id) = line.offer_id.map(|o| o.trim().to_owned()) else {
            continue;
        };
        if offer_id.is_empty()
            || offer_id.len() > 100
            || !offer_id.bytes().all(|b| b.is_ascii_graphic())
        {
            errors.push(FieldError::new(
                format!("lines[{i}].offer_id"),
                "must be 1 to 100 printable ASCII characters",
            ));
            continue;
        }
        offer_lines.push(OfferLine {
            offer_id,
            product_id: line.product_id,
            quantity: line.quantity,
            total: line.total,
        });
    }
    offer_lines
}

/// An order signal, validated.
#[derive(Debug, Clone)]
pub struct OrderSignal {
    pub order_id: String,
    pub status: String,
    pub payment_method: Option<String>,
    pub currency: Currency,
    pub total: i64,
    pub email: Option<Email>,
    pub placed_at: DateTime<Utc>,
    /// `api` or `woocommerce`.
    pub source: &'static str,
    /// The cart id, or the checkout session token the cart was captured with.
    pub cart_id: Option<String>,
    pub session_token: Option<String>,
    /// The token of the restore link the shopper came back through.
    pub restore_token: Option<String>,
    pub coupon_codes: Vec<String>,
    /// When the store last modified the order; signals are ordered by it.
    pub modified_at: Option<DateTime<Utc>>,
    /// The saved payment the order was paid with.
    pub payment: Option<PaymentRef>,
    /// The lines that came from an offer.
    pub offer_lines: Vec<OfferLine>,
}

/// What recording an order did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordedOrder {
    pub order_id: String,
    pub paid: bool,
    /// The cart the order converted (once paid), how it matched, and whether it was a
    /// recovery or a sale completed before abandonment.
    #[schema(value_type = Option<Object>)]
    pub attribution: Option<Attribution>,
    /// Whether this signal changed anything (a replay does not).
    pub changed: bool,
    /// The signal is older (by the store's modification time) than what OCart has recorded,
    /// so it was ignored; `paid` and `attribution` are the recorded state.
    pub stale: bool,
    /// The log position of the last event written, for read-your-writes.
    pub position: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordOrderError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// The order refuses the signal (it is recorded in another currency): `0` says why.
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(RecordOrderError);

/// A command or load failure that is not the aggregate refusing: the store's, or internal.
fn failed<E: std::error::Error + Send + Sync + 'static>(err: CommandError<E>) -> RecordOrderError {
    match StoreFailure::split(err) {
        Ok(failure) => RecordOrderError::Store(failure),
        Err(refused) => RecordOrderError::Internal(refused.into()),
    }
}

fn short(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, FieldError> {
    match value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
        Some(v) if v.len() > max => Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        )),
        other => Ok(other),
    }
}

/// The validated signal, or every field that is wrong. `now` is the time of the request.
pub fn validate(
    input: OrderInput,
    source: &'static str,
    now: DateTime<Utc>,
) -> Result<OrderSignal, RecordOrderError> {
    let mut errors = Vec::new();
    let mut check = |r: Result<Option<String>, FieldError>| {
        r.unwrap_or_else(|e| {
            errors.push(e);
            None
        })
    };
    let order_id = check(short("order_id", Some(input.order_id), 100));
    let status = check(short("status", Some(input.status.to_ascii_lowercase()), 40));
    let payment_method = check(short("payment_method", input.payment_method, 64));
    let cart_id = check(short("cart_id", input.cart_id, 64));
    let session_token = check(short("session_token", input.session_token, 200));
    let restore_token = check(short("restore_token", input.restore_token, 100));
    if order_id.is_none() {
        errors.push(FieldError::new("order_id", "must not be empty"));
    }
    let status = match status {
        Some(s)
            if s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Some(s)
        }
        _ => {
            errors.push(FieldError::new(
                "status",
                "must be a status such as processing, completed, on-hold or pending",
            ));
            None
        }
    };
    let currency = Currency::parse("currency", &input.currency)
        .map_err(|e| errors.push(e))
        .ok();
    if let Err(e) = Money::new(input.total, currency.unwrap_or(Currency::EUR)) {
        errors.push(FieldError::new(
            "total",
            format!("{e} (minor units), got {}", input.total),
        ));
    }
    let email = match input
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        Some(raw) => Email::parse("email", raw).map_err(|e| errors.push(e)).ok(),
        None => None,
    };
    if input.coupon_codes.len() > 20 || input.coupon_codes.iter().any(|c| c.len() > 64) {
        errors.push(FieldError::new(
            "coupon_codes",
            "at most 20 codes of at most 64 characters",
        ));
    }
    if let Some(placed_at) = input.placed_at {
        if placed_at > now + Duration::days(1) {
            errors.push(FieldError::new("placed_at", "must not be in the future"));
        }
    }
    // A time far ahead would make every later signal stale.
    if let Some(modified_at) = input.modified_at {
        if modified_at > now + Duration::days(1) {
            errors.push(FieldError::new("modified_at", "must not be in the future"));
        }
    }
    let payment = input.payment.and_then(|p| validate_payment(p, &mut errors));
    let offer_lines = validate_lines(input.lines, &mut errors);
    let (Some(currency), true) = (currency, errors.is_empty()) else {
        return Err(RecordOrderError::Invalid(errors));
    };
    Ok(OrderSignal {
        order_id: order_id.unwrap_or_default(),
        status: status.unwrap_or_default(),
        payment_method,
        currency,
        total: input.total,
        email,
        placed_at: input.placed_at.unwrap_or(now),
        source,
        cart_id,
        session_token,
        restore_token,
        coupon_codes: input.coupon_codes,
        modified_at: input.modified_at,
        payment,
        offer_lines,
    })
}

/// Validates an order signal from `source` (`api`, `woocommerce`) and records it: converts
/// the cart it matched (once paid) and records the order (the recovery follow-ups then stop
/// every other open run of the buyer). Safe to repeat.
pub async fn record_order(
    core: &Core,
    input: OrderInput,
    source: &'static str,
    meta: &CommandMeta,
) -> Result<RecordedOrder, RecordOrderError> {
    let signal = validate(input, source, meta.at)?;
    record_signal(core, signal, meta).await
}

/// The cart an order came from: each kind of evidence the order carries is tried in
/// [`MatchedBy::PRIORITY`] order, and the first that names a cart decides.
async fn match_cart(
    core: &Core,
    signal: &OrderSignal,
    email_hash: Option<&str>,
    lookback_days: u32,
) -> Result<Option<(String, MatchedBy)>, RecordOrderError> {
    for by in MatchedBy::PRIORITY {
        let found = match by {
            MatchedBy::Session => match &signal.session_token {
                Some(token) => known_cart(core, cart_id_for_session(token).to_string()).await?,
                None => None,
            },
            MatchedBy::CartId => match &signal.cart_id {
                Some(cart_id) => known_cart(core, cart_id.clone()).await?,
                None => None,
            },
            MatchedBy::RestoreToken => match &signal.restore_token {
                Some(token) => {
                    let hash = hex::encode(Sha256::digest(token.as_bytes()));
                    q::link_by_hash(&core.db, "restore", &hash)
                        .await?
                        .map(|link| link.cart_id)
                }
                None => None,
            },
            MatchedBy::Coupon => {
                let mut found = None;
                for code in &signal.coupon_codes {
                    if let Some(cart_id) = q::cart_of_coupon(&core.db, code).await? {
                        found = Some(cart_id);
                        break;
                    }
                }
                found
            }
            MatchedBy::Email => match email_hash {
                Some(hash) => {
                    let since = signal.placed_at - Duration::days(i64::from(lookback_days));
                    q::cart_of_buyer(&core.db, hash, since, signal.placed_at).await?
                }
                None => None,
            },
        };
        if let Some(cart_id) = found {
            return Ok(Some((cart_id, by)));
        }
    }
    Ok(None)
}

/// `cart_id` if such a cart was ever captured.
async fn known_cart(core: &Core, cart_id: String) -> Result<Option<String>, RecordOrderError> {
    let (cart, _, _) = core.carts.load(&cart_id).await.map_err(failed)?;
    Ok((cart.status() != CartStatus::New).then_some(cart_id))
}

/// Records a validated order signal.
async fn record_signal(
    core: &Core,
    signal: OrderSignal,
    meta: &CommandMeta,
) -> Result<RecordedOrder, RecordOrderError> {
    let settings = core.settings().await?;
    let paid = is_paid(
        &signal.status,
        signal.payment_method.as_deref(),
        &settings.recovery.offline_gateways,
    );
    let email_hash = signal
        .email
        .as_ref()
        .map(|e| core.vault.subject_for_email(e).as_str().to_owned());
    let aggregate_id = order_id_for(&signal.order_id).to_string();
    // A delivery older than what the order already has (by the store's modification time)
    // changes nothing: it converts no cart and stops no run. (The aggregate applies the
    // same rule to what it records.)
    let (known, _, _) = core.orders.load(&aggregate_id).await.map_err(failed)?;
    if let Some(facts) = known.facts() {
        if !signal_applies((facts.modified_at, facts.paid), (signal.modified_at, paid)) {
            return Ok(RecordedOrder {
                order_id: signal.order_id,
                paid: facts.paid,
                attribution: known.attribution().cloned(),
                changed: false,
                stale: true,
                position: None,
            });
        }
    }
    let mut position = None;
    let mut attribution = None;
    if paid {
        let matched = match_cart(
            core,
            &signal,
            email_hash.as_deref(),
            settings.recovery.order_lookback_days,
        )
        .await?;
        if let Some((cart_id, matched_by)) = matched {
            let command = CartCommand::MarkConverted {
                at: meta.at,
                order_id: Some(signal.order_id.clone()),
                revenue: Some(signal.total),
                placed_at: Some(signal.placed_at),
            };
            match core.carts.execute(&cart_id, command, meta).await {
                Ok(outcome) => {
                    position = outcome.last_position();
                    attribution = Some(Attribution {
                        cart_id,
                        matched_by,
                        outcome: if outcome.aggregate.converted_before_abandonment() {
                            AttributionOutcome::CompletedBeforeAbandonment
                        } else {
                            AttributionOutcome::Recovered
                        },
                    });
                }
                // Converted by another order, expired or erased: this order is not its.
                Err(CommandError::Rejected(
                    CartError::Closed(_) | CartError::NotFound | CartError::NotActive(_),
                )) => {}
                Err(other) => return Err(failed(other)),
            }
        }
    }
    let facts = OrderFacts {
        order_id: signal.order_id.clone(),
        status: signal.status.clone(),
        paid,
        payment_method: signal.payment_method.clone(),
        currency: signal.currency,
        total: signal.total,
        email_hash: email_hash.clone(),
        placed_at: signal.placed_at,
        source: signal.source.to_owned(),
        coupon_codes: signal
            .coupon_codes
            .iter()
            .map(|c| c.trim().to_ascii_uppercase())
            .collect(),
        modified_at: signal.modified_at,
        payment: signal.payment.clone(),
        offer_lines: signal.offer_lines.clone(),
    };
    let recorded = record_order_facts(core, facts, attribution, meta)
        .await
        .map_err(|e| match StoreFailure::split(e) {
            Ok(failure) => RecordOrderError::Store(failure),
            Err(e @ OrderError::CurrencyChanged(..)) => RecordOrderError::Conflict(e.to_string()),
        })?;
    Ok(RecordedOrder {
        position: recorded.position.or(position),
        ..recorded
    })
}

/// Records an order on its `Order` aggregate, with the attribution its cart conversion
/// answered. What follows from a paid order (the buyer's other open runs stopped, the
/// converted run credited) is done by the process managers that follow the log (the
/// recovery follow-ups and the opener), whichever entry point recorded it.
pub(crate) async fn record_order_facts(
    core: &Core,
    facts: OrderFacts,
    attribution: Option<Attribution>,
    meta: &CommandMeta,
) -> Result<RecordedOrder, CommandError<OrderError>> {
    let order_id = facts.order_id.clone();
    let paid = facts.paid;
    let aggregate_id = order_id_for(&order_id).to_string();
    let command = OrderCommand::Record {
        facts: Box::new(facts),
        attribution,
        at: meta.at,
    };
    // The A/B assignments this process queued go first in the log: the conversion process
    // manager meets a cart's assignment before its order (usecases::assign).
    core.assigner.recorded().await;
    let outcome = core.orders.execute(&aggregate_id, command, meta).await?;
    Ok(RecordedOrder {
        order_id,
        paid,
        attribution: outcome.aggregate.attribution().cloned(),
        changed: !outcome.events.is_empty(),
        stale: false,
        position: outcome.last_position(),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::usecases::testing::answer;

    #[test]
    fn a_lost_race_is_409_and_an_unavailable_store_503_with_retry_after() {
        let conflict = RecordOrderError::Store(StoreFailure::Conflict("cart"));
        assert_eq!(answer(conflict).0, StatusCode::CONFLICT);
        let currency = RecordOrderError::Conflict("recorded in EUR".into());
        assert_eq!(answer(currency).0, StatusCode::CONFLICT);
        let down = RecordOrderError::Store(StoreFailure::Unavailable("down".into()));
        assert_eq!(
            answer(down),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let pool = RecordOrderError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(
            answer(pool),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let invalid = RecordOrderError::Invalid(vec![FieldError::new("total", "too big")]);
        assert_eq!(answer(invalid).0, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn a_lost_race_of_the_cart_conversion_is_a_store_failure_not_internal() {
        let lost = failed(CommandError::<CartError>::Conflict("cart"));
        assert!(matches!(
            lost,
            RecordOrderError::Store(StoreFailure::Conflict("cart"))
        ));
        let down = failed(CommandError::<CartError>::Unavailable("down".into()));
        assert!(matches!(
            down,
            RecordOrderError::Store(StoreFailure::Unavailable(_))
        ));
    }

    #[test]
    fn every_wrong_field_is_named() {
        let now = Utc::now();
        let input = OrderInput {
            order_id: " ".into(),
            status: "paid!".into(),
            currency: "XXX".into(),
            total: -1,
            placed_at: Some(now + Duration::days(2)),
            ..OrderInput::default()
        };
        let Err(RecordOrderError::Invalid(errors)) = validate(input, "api", now) else {
            panic!("invalid input passed");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["order_id", "status", "currency", "total", "placed_at"]
        );
    }
}
