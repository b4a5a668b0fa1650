//! One-click upsells and downsells over HTTP (issue 11): issuing the one-click token, the
//! shopper's decision (accept, decline), the confirmation after a 3DS / payer action, reading
//! an acceptance, and asking for a refund.
//!
//! Every decision is the `UpsellAcceptance` aggregate's, whose id derives from (parent order,
//! funnel, step): one decision per step, whatever idempotency keys the requests carry. An
//! accept records `upsell/before_charge` with the charge's gateway key and answers at once;
//! the charger (a process manager) makes the charge. The HTTP idempotency key and the body's
//! sha256 are recorded with the decision, so a repeat is answered from the aggregate (the same
//! answer), another body under the same key is refused, and a request while another with the
//! same key is being handled in this process is refused with a retry hint.
//!
//! The one-click token is signed with a key derived from the server secret
//! ([`signing_key`]); its `jti` is burned by the decision itself (the step is decided once).

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use chrono::{DateTime, Duration, Utc};
use ocart_domain::abtest::{self, Surface};
use ocart_domain::funnel::Funnel;
use ocart_domain::funnel::{next_step, FunnelStatus, Outcome as FunnelOutcome, StepType};
use ocart_domain::offer::{Offer, OfferDefinition, OfferKind, OfferStatus, Quote};
use ocart_domain::order::{order_id_for, Order, OrderFacts};
use ocart_domain::upsell::{
    acceptance_id, charge_key, AcceptInput, AcceptanceStatus, ChargeResult, DeclineInput,
    OrderStrategy, UpsellAcceptance, UpsellCommand, UpsellError, UpsellKind,
};
use ocart_domain::FieldError;
use ocart_processors::gateways::ChargeOutcome;
use ocart_projections::{CommandError, CommandMeta};
use sha2::{Digest, Sha256};

use super::StoreFailure;
use crate::core::Core;
use crate::upsell_token::{self, TokenError, UpsellClaims};

/// The purpose the token signing key is derived for (`Vault::derived_key`).
pub const TOKEN_KEY_PURPOSE: &str = "upsell-token";

/// The longest return URL a token carries.
pub const MAX_RETURN_URL_LEN: usize = 2048;

/// The longest `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The longest refund id and refund reason.
pub const MAX_REFUND_ID_LEN: usize = 64;
pub const MAX_REFUND_REASON_LEN: usize = 500;

/// Version 0 of the key one-click tokens are signed with: derived from the server secret, never
/// stored. After `ocart gateway rotate upsell-token`, `secret_ring` chooses the version.
pub fn signing_key(core: &Core) -> [u8; 32] {
    core.vault.derived_key(TOKEN_KEY_PURPOSE)
}

/// The public base of the hosted pages (`recovery.public_url`), without a trailing slash.
pub fn public_base(core: &Core) -> String {
    core.config
        .recovery
        .public_url
        .trim_end_matches('/')
        .to_owned()
}

/// The hosted offer page of `token`.
pub fn page_url(core: &Core, token: &str) -> String {
    format!("{}/ocart/v1/upsells/page?token={token}", public_base(core))
}

/// The sha256 (hex) of a request body, recorded with a decision made under an idempotency key.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// An `Idempotency-Key` as the client sent it: 1 to 255 printable ASCII characters.
pub fn check_idempotency_key(raw: &str) -> Result<String, UpsellsError> {
    if raw.is_empty()
        || raw.len() > MAX_IDEMPOTENCY_KEY_LEN
        || !raw.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(UpsellsError::Invalid(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        )]));
    }
    Ok(raw.to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum UpsellsError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// The order, funnel, acceptance, … named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The token is malformed or its signature does not verify (tampered, another server).
    #[error("the upsell token is not valid")]
    TokenInvalid,
    #[error("the upsell token has expired")]
    TokenExpired,
    /// A valid token for another offer or another acceptance.
    #[error("the upsell token is for another {0}")]
    TokenForeign(&'static str),
    /// The step was decided already (the token's `jti` is burned).
    #[error("this offer step of the order was already {verb}")]
    Decided {
        acceptance_id: String,
        status: &'static str,
        verb: &'static str,
    },
    #[error("the parent order {0} is not paid")]
    Unpaid(String),
    /// The parent order has no saved payment, or its gateway is not configured.
    #[error("{0}")]
    NoPayment(String),
    /// The offer cannot be taken at this step now (archived, not an upsell, not the step's).
    #[error("{0}")]
    Ineligible(String),
    #[error("the Idempotency-Key was used with another request body")]
    KeyReused,
    #[error("a request with this Idempotency-Key is being handled; retry")]
    InFlight,
    /// A refund (or a confirmation) the acceptance's state refuses.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(UpsellsError);

impl From<TokenError> for UpsellsError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Expired => Self::TokenExpired,
            TokenError::Malformed | TokenError::BadSignature => Self::TokenInvalid,
        }
    }
}

impl UpsellsError {
    fn of_command<E: std::error::Error + Send + Sync + 'static>(err: CommandError<E>) -> Self {
        match StoreFailure::split(err) {
            Ok(failure) => Self::Store(failure),
            Err(e) => Self::Internal(anyhow::anyhow!(e.to_string())),
        }
    }

    fn decided(acceptance: &UpsellAcceptance) -> Self {
        let status = acceptance
            .status()
            .unwrap_or(AcceptanceStatus::DeclinedByShopper);
        Self::Decided {
            acceptance_id: acceptance.id().to_owned(),
            status: status.as_str(),
            verb: if status == AcceptanceStatus::DeclinedByShopper {
                "declined"
            } else {
                "accepted"
            },
        }
    }
}

/// The keys being handled in this process, by route.
static IN_FLIGHT: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// Holds an idempotency key while its request is handled; released on drop.
struct InFlight(String);

impl InFlight {
    fn take(scope: &str, key: Option<&str>) -> Result<Option<Self>, UpsellsError> {
        let Some(key) = key else { return Ok(None) };
        let entry = format!("{scope}\u{0}{key}");
        let mut set = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(entry.clone()) {
            return Err(UpsellsError::InFlight);
        }
        Ok(Some(Self(entry)))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// A step of a funnel with an offer, as a token may name it.
#[derive(Debug, Clone)]
struct OfferStep {
    kind: UpsellKind,
    offer_id: String,
}

/// The facts a token's step needs, loaded from the aggregates (strongly consistent).
struct StepFacts {
    step: OfferStep,
    offer: OfferDefinition,
    quote: Quote,
}

fn order_facts(order: &Order, order_id: &str) -> Result<OrderFacts, UpsellsError> {
    order
        .facts()
        .cloned()
        .ok_or_else(|| UpsellsError::NotFound(format!("order {order_id}")))
}

/// The parent order, paid, with a saved payment whose gateway is configured.
fn check_paid_parent(
    core: &Core,
    order_id: &str,
    facts: OrderFacts,
) -> Result<OrderFacts, UpsellsError> {
    if !facts.paid {
        return Err(UpsellsError::Unpaid(order_id.to_owned()));
    }
    let Some(payment) = &facts.payment else {
        return Err(UpsellsError::NoPayment(format!(
            "the parent order {order_id} carries no saved payment method"
        )));
    };
    if core.gateways.get(&payment.gateway).is_none() {
        return Err(UpsellsError::NoPayment(format!(
            "the parent order's gateway {} is not configured",
            payment.gateway
        )));
    }
    Ok(facts)
}

/// The aggregates a decision or a token reads, loaded in one query of the log
/// (`EventLog::load_many`) instead of one each: the same strongly consistent reads, fewer
/// round trips on the hot path of the hosted page.
struct Loaded {
    acceptance: Option<UpsellAcceptance>,
    order: Order,
    funnel: Funnel,
    offer: Option<Offer>,
}

fn unavailable(err: sqlx::Error) -> UpsellsError {
    UpsellsError::of_command(CommandError::<UpsellError>::Unavailable(err.to_string()))
}

/// Loads the parent order and the funnel, and the acceptance and the offer when given.
async fn load_together(
    core: &Core,
    acceptance_id: Option<&str>,
    order_id: &str,
    funnel_id: &str,
    offer_id: Option<&str>,
) -> Result<Loaded, UpsellsError> {
    let order_stream = order_id_for(order_id).to_string();
    let mut streams = vec![
        (core.orders.aggregate_type(), order_stream.as_str()),
        (core.funnels.aggregate_type(), funnel_id),
    ];
    if let Some(id) = acceptance_id {
        streams.push((core.acceptances.aggregate_type(), id));
    }
    if let Some(id) = offer_id {
        streams.push((core.offers.aggregate_type(), id));
    }
    let mut loaded = core
        .log
        .load_many(&streams)
        .await
        .map_err(unavailable)?
        .into_iter();
    let mut next = || loaded.next().unwrap_or_default();
    let (order, _, _) = core
        .orders
        .fold(&order_stream, &next())
        .map_err(UpsellsError::of_command)?;
    let (funnel, _, _) = core
        .funnels
        .fold(funnel_id, &next())
        .map_err(UpsellsError::of_command)?;
    let acceptance = match acceptance_id {
        Some(id) => Some(
            core.acceptances
                .fold(id, &next())
                .map_err(UpsellsError::of_command)?
                .0,
        ),
        None => None,
    };
    let offer = match offer_id {
        Some(id) => Some(
            core.offers
                .fold(id, &next())
                .map_err(UpsellsError::of_command)?
                .0,
        ),
        None => None,
    };
    Ok(Loaded {
        acceptance,
        order,
        funnel,
        offer,
    })
}

/// The upsell or downsell step `step` of funnel `funnel_id` and its offer.
async fn offer_step(core: &Core, funnel_id: &str, step: &str) -> Result<OfferStep, UpsellsError> {
    let (funnel, _, _) = core
        .funnels
        .load(funnel_id)
        .await
        .map_err(UpsellsError::of_command)?;
    offer_step_of(&funnel, funnel_id, step)
}

fn offer_step_of(funnel: &Funnel, funnel_id: &str, step: &str) -> Result<OfferStep, UpsellsError> {
    let definition = funnel
        .definition()
        .ok_or_else(|| UpsellsError::NotFound(format!("funnel {funnel_id}")))?;
    if funnel.status() == FunnelStatus::Archived {
        return Err(UpsellsError::Ineligible(format!(
            "the funnel {funnel_id} is archived"
        )));
    }
    let found = definition
        .steps
        .iter()
        .find(|s| s.key == step)
        .ok_or_else(|| {
            UpsellsError::Invalid(vec![FieldError::new(
                "step",
                format!("is not a step of the funnel {funnel_id}"),
            )])
        })?;
    let kind = match found.kind {
        StepType::Upsell => UpsellKind::Upsell,
        StepType::Downsell => UpsellKind::Downsell,
        other => {
            return Err(UpsellsError::Invalid(vec![FieldError::new(
                "step",
                format!(
                    "is a {} step; only upsell and downsell steps take one-click offers",
                    other.as_str()
                ),
            )]))
        }
    };
    let offer_id = found
        .offer_id
        .clone()
        .ok_or_else(|| UpsellsError::Ineligible(format!("the step {step} has no offer")))?;
    Ok(OfferStep { kind, offer_id })
}

/// The offer, active and an upsell or downsell, and its price.
async fn eligible_offer(
    core: &Core,
    offer_id: &str,
) -> Result<(OfferDefinition, Quote), UpsellsError> {
    let (offer, _, _): (Offer, _, _) = core
        .offers
        .load(offer_id)
        .await
        .map_err(UpsellsError::of_command)?;
    eligible_offer_of(&offer, offer_id)
}

fn eligible_offer_of(
    offer: &Offer,
    offer_id: &str,
) -> Result<(OfferDefinition, Quote), UpsellsError> {
    let Some(definition) = offer.definition().cloned() else {
        return Err(UpsellsError::Ineligible(format!(
            "the offer {offer_id} does not exist"
        )));
    };
    if offer.status() != Some(OfferStatus::Active) {
        return Err(UpsellsError::Ineligible(format!(
            "the offer {offer_id} is archived"
        )));
    }
    if !matches!(definition.kind, OfferKind::Upsell | OfferKind::Downsell) {
        return Err(UpsellsError::Ineligible(format!(
            "the offer {offer_id} is a {}, not an upsell or downsell",
            definition.kind.as_str()
        )));
    }
    let quote = definition.quote().map_err(|e| {
        UpsellsError::Ineligible(format!("the offer {offer_id} cannot be priced: {e}"))
    })?;
    Ok((definition, quote))
}

/// The parent order's cart (the one it converted), if it has one.
async fn order_cart(core: &Core, order_id: &str) -> Result<Option<String>, UpsellsError> {
    let (order, _, _) = core
        .orders
        .load(&order_id_for(order_id).to_string())
        .await
        .map_err(UpsellsError::of_command)?;
    Ok(order.attribution().map(|a| a.cart_id.clone()))
}

/// The offer step offer `step_offer` shows the parent order `order_id`: the offer of the
/// order's variant when a running upsell test targets it (`abtest::offer_test`; the unit is
/// `abtest::upsell_unit` of the order's cart and id) and that offer is eligible, else the
/// step's own. With no upsell test running nothing is read.
async fn served_offer(
    core: &Core,
    order_id: &str,
    step_offer: &str,
) -> Result<String, UpsellsError> {
    let running = core.assigner.running(core).await?;
    if !running.on(Surface::Upsell) {
        return Ok(step_offer.to_owned());
    }
    let Some(test) = abtest::offer_test(running.tests(), Surface::Upsell, step_offer) else {
        return Ok(step_offer.to_owned());
    };
    let cart = order_cart(core, order_id).await?;
    let unit = abtest::upsell_unit(cart.as_deref(), order_id);
    let assigned = super::assign::assign(core, test, &unit).await?;
    let serves = &assigned.variant.serves;
    if assigned.index > 0 && serves != step_offer && eligible_offer(core, serves).await.is_ok() {
        Ok(serves.clone())
    } else {
        Ok(step_offer.to_owned())
    }
}

/// The step's facts for a token: the step still shows the token's offer (its own, or the
/// order's variant of it in a running upsell test), which is eligible.
async fn step_facts(core: &Core, claims: &UpsellClaims) -> Result<StepFacts, UpsellsError> {
    let loaded = load_together(
        core,
        None,
        &claims.order_id,
        &claims.funnel_id,
        Some(&claims.offer_id),
    )
    .await?;
    step_facts_of(core, claims, &loaded).await
}

/// [`step_facts`] on aggregates loaded already (the funnel and the token's offer).
async fn step_facts_of(
    core: &Core,
    claims: &UpsellClaims,
    loaded: &Loaded,
) -> Result<StepFacts, UpsellsError> {
    let mut step = offer_step_of(&loaded.funnel, &claims.funnel_id, &claims.step)?;
    if step.offer_id != claims.offer_id {
        let served = served_offer(core, &claims.order_id, &step.offer_id).await?;
        if served != claims.offer_id {
            return Err(UpsellsError::Ineligible(format!(
                "the step {} shows another offer now",
                claims.step
            )));
        }
        step.offer_id = served;
    }
    let (offer, quote) = match &loaded.offer {
        Some(offer) => eligible_offer_of(offer, &step.offer_id)?,
        None => eligible_offer(core, &step.offer_id).await?,
    };
    Ok(StepFacts { step, offer, quote })
}

fn check_return_url(raw: &str) -> Result<String, UpsellsError> {
    let raw = raw.trim();
    let ok = raw.len() <= MAX_RETURN_URL_LEN
        && raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .is_some_and(|rest| !rest.is_empty())
        && raw.bytes().all(|b| (0x21..0x7f).contains(&b));
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(UpsellsError::Invalid(vec![FieldError::new(
            "return_url",
            "must be an http(s) URL of at most 2048 characters, without spaces",
        )]))
    }
}

fn check_id(field: &'static str, raw: &str, max: usize) -> Result<(), UpsellsError> {
    if raw.trim().is_empty() || raw.chars().count() > max || raw.chars().any(char::is_control) {
        return Err(UpsellsError::Invalid(vec![FieldError::new(
            field,
            format!("must be 1 to {max} characters without control characters"),
        )]));
    }
    Ok(())
}

/// What `issue-token` asks for.
#[derive(Debug, Clone)]
pub struct IssueToken {
    pub order_id: String,
    pub funnel_id: String,
    pub step: String,
    pub return_url: Option<String>,
}

/// A token issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub claims: UpsellClaims,
    pub page_url: String,
}

async fn token_ttl(core: &Core) -> Result<Duration, UpsellsError> {
    let minutes = core.settings().await?.upsells.one_click_token_ttl_min;
    Ok(Duration::minutes(i64::from(minutes.max(1))))
}

/// Issues a one-click token for the parent order's step: the order is recorded, paid and
/// carries a saved payment on a configured gateway; the step is an upsell or downsell step
/// whose offer is active. When a running upsell test targets the step's offer, the token is
/// bound to the order's variant's offer (so the page shows it and accept charges it).
pub async fn issue_token(core: &Core, input: IssueToken) -> Result<Issued, UpsellsError> {
    check_id("order_id", &input.order_id, 200)?;
    check_id("funnel_id", &input.funnel_id, 200)?;
    check_id("step", &input.step, 200)?;
    let return_url = input
        .return_url
        .as_deref()
        .map(check_return_url)
        .transpose()?;
    // The step's offer as this process last saw the funnel: read with the order and the
    // funnel in one go, and used only if it is still the step's offer (else read on its own).
    let hint = core
        .funnels
        .peek(&input.funnel_id)
        .and_then(|(funnel, _)| offer_step_of(&funnel, &input.funnel_id, &input.step).ok())
        .map(|step| step.offer_id);
    let loaded = load_together(
        core,
        None,
        &input.order_id,
        &input.funnel_id,
        hint.as_deref(),
    )
    .await?;
    check_paid_parent(
        core,
        &input.order_id,
        order_facts(&loaded.order, &input.order_id)?,
    )?;
    let step = offer_step_of(&loaded.funnel, &input.funnel_id, &input.step)?;
    match (&loaded.offer, hint) {
        (Some(offer), Some(hint)) if hint == step.offer_id => {
            eligible_offer_of(offer, &step.offer_id)?;
        }
        _ => {
            eligible_offer(core, &step.offer_id).await?;
        }
    }
    let offer_id = served_offer(core, &input.order_id, &step.offer_id).await?;
    let mut claims = UpsellClaims::new(
        &input.order_id,
        &input.funnel_id,
        &input.step,
        &offer_id,
        core.clock.now(),
        token_ttl(core).await?,
    );
    claims.return_url = return_url;
    let token = crate::secret_ring::issue_upsell_token(core, &claims);
    Ok(Issued {
        page_url: page_url(core, &token),
        token,
        claims,
    })
}

/// The claims of a token that must still be valid (deciding).
fn live_claims(core: &Core, token: &str) -> Result<UpsellClaims, UpsellsError> {
    let key = crate::secret_ring::upsell_verify_key(core, token)?;
    Ok(upsell_token::verify(token, key.expose(), core.clock.now())?)
}

/// The claims of a token signed by us, expired or not (reading a decision, confirming it).
pub fn signed_claims(core: &Core, token: &str) -> Result<UpsellClaims, UpsellsError> {
    let key = crate::secret_ring::upsell_verify_key(core, token)?;
    Ok(upsell_token::verify_signature(token, key.expose())?)
}

/// The acceptance a token's step leads to.
pub fn acceptance_of(claims: &UpsellClaims) -> String {
    acceptance_id(&claims.order_id, &claims.funnel_id, &claims.step)
}

async fn load_acceptance(core: &Core, id: &str) -> Result<UpsellAcceptance, UpsellsError> {
    let (acceptance, _, _) = core
        .acceptances
        .load(id)
        .await
        .map_err(UpsellsError::of_command)?;
    Ok(acceptance)
}

/// A decision by the shopper, as the HTTP request carried it.
#[derive(Debug, Clone)]
pub struct Decide {
    /// The offer id of the route (`/upsells/{id}/accept`).
    pub offer_id: String,
    pub token: String,
    pub request_key: Option<String>,
    pub request_hash: Option<String>,
}

/// A decision made (or found made by the same request before).
#[derive(Debug, Clone)]
pub struct Decision {
    pub acceptance: UpsellAcceptance,
    pub claims: UpsellClaims,
    /// The decision's log position when this request made it, for read-your-writes.
    pub position: Option<i64>,
}

/// The answer to a request whose step is decided already: the same request again (same key,
/// same body, same kind of decision) is answered as the first time; the same key with another
/// body is refused; anything else finds the step decided.
fn answer_decided(
    acceptance: UpsellAcceptance,
    claims: UpsellClaims,
    input: &Decide,
    declining: bool,
) -> Result<Decision, UpsellsError> {
    let (key, hash) = acceptance.request();
    let same_kind = (acceptance.status() == Some(AcceptanceStatus::DeclinedByShopper)) == declining;
    match (input.request_key.as_deref(), key) {
        (Some(sent), Some(recorded)) if sent == recorded => {
            if hash == input.request_hash.as_deref() && same_kind {
                Ok(Decision {
                    acceptance,
                    claims,
                    position: None,
                })
            } else {
                Err(UpsellsError::KeyReused)
            }
        }
        _ => Err(UpsellsError::decided(&acceptance)),
    }
}

/// Checks a decision's token: valid, for the route's offer.
fn decision_claims(core: &Core, input: &Decide) -> Result<UpsellClaims, UpsellsError> {
    let claims = live_claims(core, &input.token)?;
    if claims.offer_id != input.offer_id {
        return Err(UpsellsError::TokenForeign("offer"));
    }
    Ok(claims)
}

/// The shopper accepts the token's offer: checks the token, the parent order (paid, with a
/// saved payment) and the offer (the step's, active, priced), then records the decision and
/// the charge key (`upsell/before_charge`). The charge is the charger's.
pub async fn accept(
    core: &Core,
    input: Decide,
    meta: &CommandMeta,
) -> Result<Decision, UpsellsError> {
    let _held = InFlight::take("accept", input.request_key.as_deref())?;
    let claims = decision_claims(core, &input)?;
    let id = acceptance_of(&claims);
    let loaded = load_together(
        core,
        Some(&id),
        &claims.order_id,
        &claims.funnel_id,
        Some(&claims.offer_id),
    )
    .await?;
    if let Some(existing) = loaded.acceptance.as_ref().filter(|a| a.status().is_some()) {
        return answer_decided(existing.clone(), claims, &input, false);
    }
    let parent = check_paid_parent(
        core,
        &claims.order_id,
        order_facts(&loaded.order, &claims.order_id)?,
    )?;
    let payment = parent
        .payment
        .clone()
        .ok_or_else(|| UpsellsError::NoPayment("no saved payment".into()))?;
    let facts = step_facts_of(core, &claims, &loaded).await?;
    // The order's upsell assignment (queued at issue-token) goes first in the log, before the
    // acceptance that converts it (usecases::assign).
    core.assigner.recorded().await;
    let strategy = OrderStrategy::parse(&core.settings().await?.upsells.order_strategy_default)
        .unwrap_or(OrderStrategy::A);
    let command = UpsellCommand::Accept(Box::new(AcceptInput {
        offer_id: facts.step.offer_id.clone(),
        kind: facts.step.kind,
        funnel_id: claims.funnel_id.clone(),
        step: claims.step.clone(),
        parent_order_id: claims.order_id.clone(),
        jti: claims.jti.clone(),
        product_id: facts.offer.product.product_id.clone(),
        product_name: facts.offer.product.name.clone(),
        quantity: facts.offer.product.quantity,
        price: facts.quote.price,
        gateway: payment.gateway,
        customer: payment.customer,
        payment_method: payment.payment_method,
        strategy,
        request_key: input.request_key.clone(),
        request_hash: input.request_hash.clone(),
        at: meta.at,
    }));
    decide(core, &id, command, claims, &input, false, meta).await
}

/// Records a decision, or answers the one a concurrent request made first.
async fn decide(
    core: &Core,
    id: &str,
    command: UpsellCommand,
    claims: UpsellClaims,
    input: &Decide,
    declining: bool,
    meta: &CommandMeta,
) -> Result<Decision, UpsellsError> {
    match core.acceptances.execute(id, command, meta).await {
        Ok(outcome) => Ok(Decision {
            position: outcome.last_position(),
            acceptance: outcome.aggregate,
            claims,
        }),
        Err(CommandError::Rejected(UpsellError::AlreadyDecided(_))) => {
            let existing = load_acceptance(core, id).await?;
            answer_decided(existing, claims, input, declining)
        }
        Err(err) => Err(UpsellsError::of_command(err)),
    }
}

/// The shopper declines the token's offer: records `upsell/declined`. The funnel's
/// `declined` branch says where they go next ([`next_page`]).
pub async fn decline(
    core: &Core,
    input: Decide,
    meta: &CommandMeta,
) -> Result<Decision, UpsellsError> {
    let _held = InFlight::take("decline", input.request_key.as_deref())?;
    let claims = decision_claims(core, &input)?;
    let id = acceptance_of(&claims);
    let existing = load_acceptance(core, &id).await?;
    if existing.status().is_some() {
        return answer_decided(existing, claims, &input, true);
    }
    let step = offer_step(core, &claims.funnel_id, &claims.step).await?;
    let command = UpsellCommand::Decline(Box::new(DeclineInput {
        offer_id: claims.offer_id.clone(),
        kind: step.kind,
        funnel_id: claims.funnel_id.clone(),
        step: claims.step.clone(),
        parent_order_id: claims.order_id.clone(),
        jti: claims.jti.clone(),
        request_key: input.request_key.clone(),
        request_hash: input.request_hash.clone(),
        at: meta.at,
    }));
    decide(core, &id, command, claims, &input, true, meta).await
}

/// Where the funnel goes after a decided step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Another offer step: its page and a fresh token for it.
    Offer {
        step: String,
        offer_id: String,
        token: String,
        page_url: String,
    },
    /// No further offer: back to the store (the token's return URL, if it had one).
    Done { return_url: Option<String> },
}

/// Where the funnel goes from the decided step of `acceptance` on `outcome`'s branch: the next
/// upsell or downsell step (with a token for it), or the token's return URL. The token is a
/// function of the decision (its `jti` derives from the acceptance and the step, its expiry
/// from the decision's time), so the same decision always answers the same next page.
pub async fn next_page(
    core: &Core,
    claims: &UpsellClaims,
    acceptance: &UpsellAcceptance,
    outcome: FunnelOutcome,
) -> Result<Next, UpsellsError> {
    let done = Next::Done {
        return_url: claims.return_url.clone(),
    };
    let (funnel, _, _) = core
        .funnels
        .load(&claims.funnel_id)
        .await
        .map_err(UpsellsError::of_command)?;
    let Some(definition) = funnel.definition() else {
        return Ok(done);
    };
    let Some(step) = next_step(&definition.steps, &claims.step, outcome) else {
        return Ok(done);
    };
    let (true, Some(offer_id)) = (step.kind.has_outcomes(), step.offer_id.clone()) else {
        return Ok(done);
    };
    if eligible_offer(core, &offer_id).await.is_err() {
        return Ok(done);
    }
    let offer_id = served_offer(core, &claims.order_id, &offer_id).await?;
    let decided_at = acceptance.decided_at().unwrap_or_else(|| core.clock.now());
    let jti = hex::encode(&Sha256::digest(format!("{}:next:{}", acceptance.id(), step.key))[..16]);
    let next = UpsellClaims {
        order_id: claims.order_id.clone(),
        funnel_id: claims.funnel_id.clone(),
        step: step.key.clone(),
        offer_id: offer_id.clone(),
        jti,
        exp: decided_at
            .timestamp()
            .saturating_add(token_ttl(core).await?.num_seconds()),
        return_url: claims.return_url.clone(),
    };
    let token = crate::secret_ring::issue_upsell_token(core, &next);
    Ok(Next::Offer {
        step: step.key.clone(),
        offer_id,
        page_url: page_url(core, &token),
        token,
    })
}

/// Reads an acceptance from its aggregate (consistent). `token`, when given, must be a token
/// (expired or not) of that acceptance's step.
pub async fn acceptance(
    core: &Core,
    id: &str,
    token: Option<&str>,
) -> Result<UpsellAcceptance, UpsellsError> {
    Ok(acceptance_at(core, id, token).await?.0)
}

/// [`acceptance`] with its last sequence.
async fn acceptance_at(
    core: &Core,
    id: &str,
    token: Option<&str>,
) -> Result<(UpsellAcceptance, i64), UpsellsError> {
    check_token_for(core, id, token)?;
    let (acceptance, sequence, _) = core
        .acceptances
        .load(id)
        .await
        .map_err(UpsellsError::of_command)?;
    if acceptance.status().is_none() {
        return Err(UpsellsError::NotFound("acceptance".into()));
    }
    Ok((acceptance, sequence))
}

/// `token`, when given, must be a token (expired or not) of acceptance `id`'s step.
fn check_token_for(core: &Core, id: &str, token: Option<&str>) -> Result<(), UpsellsError> {
    if let Some(token) = token {
        let claims = signed_claims(core, token)?;
        if acceptance_of(&claims) != id {
            return Err(UpsellsError::TokenForeign("acceptance"));
        }
    }
    Ok(())
}

/// The longest a status read may wait for a change ([`acceptance_after`]).
pub const MAX_STATUS_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often a waiting status read looks again by itself: an append by another process (a
/// charger elsewhere) wakes nobody in this one.
const STATUS_RECHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// [`acceptance`], answered once its status is no longer `while_status` (at once when it is
/// not, or when `while_status` is `None`), or when `wait` (at most [`MAX_STATUS_WAIT`]) has
/// passed: a long poll, so a page waiting on a charge asks once instead of every second. The
/// wait sleeps on this process's appends to the acceptance, and looks again every
/// [`STATUS_RECHECK`] in any case. Woken by an append here, it reads the state that append
/// left in the acceptances' state cache (shared with the charger) when that is newer than the
/// one it holds, instead of loading the stream again; every recheck loads it. The first read
/// loads it too, unless the cache holds the acceptance at `while_status` (the page asks while
/// the status it shows is still the latest this process wrote): then it waits at once, and a
/// newer state written elsewhere is seen at the first recheck. A cached state is never
/// answered without a wake-up, so the answer never goes back behind what the page has shown.
pub async fn acceptance_after(
    core: &Core,
    id: &str,
    token: Option<&str>,
    while_status: Option<AcceptanceStatus>,
    wait: std::time::Duration,
) -> Result<UpsellAcceptance, UpsellsError> {
    let Some(while_status) = while_status else {
        return acceptance(core, id, token).await;
    };
    let deadline = tokio::time::Instant::now() + wait.min(MAX_STATUS_WAIT);
    let watch = core
        .log
        .watch_stream(ocart_domain::upsell::ACCEPTANCE_TYPE, id);
    let mut newer: Option<(UpsellAcceptance, i64)> = None;
    let mut first = true;
    loop {
        // Registered before the read: an append between the read and the sleep still wakes it.
        let mut appended = std::pin::pin!(watch.notified());
        appended.as_mut().enable();
        // (Not when there is no wait: that answer is the stored state's.)
        let cached_waiting = if std::mem::take(&mut first) && !wait.is_zero() {
            check_token_for(core, id, token)?;
            core.acceptances
                .peek(id)
                .filter(|(state, _)| state.status() == Some(while_status))
        } else {
            None
        };
        let (found, sequence) = match newer.take().or(cached_waiting) {
            Some(state) => state,
            None => acceptance_at(core, id, token).await?,
        };
        let now = tokio::time::Instant::now();
        if found.status() != Some(while_status) || now >= deadline {
            return Ok(found);
        }
        let recheck = (deadline - now).min(STATUS_RECHECK);
        if tokio::time::timeout(recheck, appended).await.is_ok() {
            newer = core
                .acceptances
                .peek(id)
                .filter(|(state, seq)| *seq > sequence && state.status().is_some());
        }
    }
}

/// The domain's record of a gateway's answer.
pub fn charge_result(outcome: ChargeOutcome) -> ChargeResult {
    match outcome {
        ChargeOutcome::Succeeded { charge_ref } => ChargeResult::Succeeded { charge_ref },
        ChargeOutcome::RequiresAction {
            charge_ref,
            action_url,
            ..
        } => ChargeResult::RequiresAction {
            charge_ref,
            action_url,
        },
        ChargeOutcome::Declined {
            charge_ref,
            code,
            message,
        } => ChargeResult::Declined {
            charge_ref,
            code,
            message,
        },
        ChargeOutcome::Unknown { charge_ref, reason } => {
            ChargeResult::Unknown { charge_ref, reason }
        }
    }
}

/// After the shopper's 3DS / payer action: reads the payment back from the gateway (never
/// trusting the browser) and records its answer. A charge decided already, or not made yet,
/// is answered as it stands.
pub async fn confirm(
    core: &Core,
    id: &str,
    token: &str,
    meta: &CommandMeta,
) -> Result<Decision, UpsellsError> {
    let claims = signed_claims(core, token)?;
    if acceptance_of(&claims) != id {
        return Err(UpsellsError::TokenForeign("acceptance"));
    }
    let (acceptance, position) = read_back(core, id, meta).await?;
    Ok(Decision {
        position,
        acceptance,
        claims,
    })
}

/// The shopper is back from the gateway's own step (the `return_url` of the charge): the
/// payment is read back from the gateway, as by [`confirm`]. No token is needed — nothing the
/// browser says is believed, only the gateway's answer is recorded — and the answer is only
/// the acceptance's shown status.
pub async fn returned(
    core: &Core,
    id: &str,
    meta: &CommandMeta,
) -> Result<AcceptanceStatus, UpsellsError> {
    let (acceptance, _) = read_back(core, id, meta).await?;
    acceptance
        .status()
        .ok_or_else(|| UpsellsError::NotFound("acceptance".into()))
}

/// Reads a waiting (requires action) or unknown charge back from its gateway and records the
/// answer; any other acceptance is answered as it is.
async fn read_back(
    core: &Core,
    id: &str,
    meta: &CommandMeta,
) -> Result<(UpsellAcceptance, Option<i64>), UpsellsError> {
    let acceptance = load_acceptance(core, id).await?;
    let status = acceptance
        .status()
        .ok_or_else(|| UpsellsError::NotFound("acceptance".into()))?;
    let open = matches!(
        status,
        AcceptanceStatus::RequiresAction | AcceptanceStatus::Unknown
    );
    let (true, Some(charge_ref)) = (open, acceptance.charge_ref().map(str::to_owned)) else {
        return Ok((acceptance, None));
    };
    let gateway = core.gateways.get(acceptance.gateway()).ok_or_else(|| {
        UpsellsError::NoPayment(format!(
            "the gateway {} is not configured",
            acceptance.gateway()
        ))
    })?;
    let outcome = gateway.complete_action(&charge_ref, &charge_key(id)).await;
    let command = UpsellCommand::RecordCharge {
        result: charge_result(outcome),
        at: meta.at,
    };
    let outcome = core
        .acceptances
        .execute(id, command, meta)
        .await
        .map_err(UpsellsError::of_command)?;
    let position = outcome.last_position();
    Ok((outcome.aggregate, position))
}

/// A refund asked for by an admin.
#[derive(Debug, Clone)]
pub struct RefundRequest {
    /// Minor units; `None`: what is left of the charge.
    pub amount: Option<i64>,
    pub reason: Option<String>,
    /// The client's id for this refund (a retry sends the same); `None`: a fresh one.
    pub refund_id: Option<String>,
}

/// A refund recorded as requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequested {
    pub refund_id: String,
    pub amount: i64,
    pub position: Option<i64>,
}

/// Asks for a refund of (part of) the upsell's own charge; the charger makes it at the gateway
/// and notes it on the store order.
pub async fn refund(
    core: &Core,
    id: &str,
    input: RefundRequest,
    meta: &CommandMeta,
) -> Result<RefundRequested, UpsellsError> {
    let refund_id = match input.refund_id {
        Some(raw) => {
            let ok = !raw.is_empty()
                && raw.len() <= MAX_REFUND_ID_LEN
                && raw
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(UpsellsError::Invalid(vec![FieldError::new(
                    "refund_id",
                    "must be 1 to 64 letters, digits, '-' or '_'",
                )]));
            }
            raw
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let reason = input
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason.as_deref().is_some_and(|r| {
        r.chars().count() > MAX_REFUND_REASON_LEN || r.chars().any(char::is_control)
    }) {
        return Err(UpsellsError::Invalid(vec![FieldError::new(
            "reason",
            "must be at most 500 characters without control characters",
        )]));
    }
    let acceptance = load_acceptance(core, id).await?;
    if acceptance.status().is_none() {
        return Err(UpsellsError::NotFound("acceptance".into()));
    }
    let amount = match input.amount {
        Some(amount) => amount,
        None => match acceptance
            .refunds()
            .iter()
            .find(|r| r.refund_id == refund_id)
        {
            // A retry of a full refund asks for what it asked the first time.
            Some(existing) => existing.amount,
            None => acceptance.amount().saturating_sub(acceptance.refunded()),
        },
    };
    let command = UpsellCommand::Refund {
        refund_id: refund_id.clone(),
        amount,
        reason,
        at: meta.at,
    };
    match core.acceptances.execute(id, command, meta).await {
        Ok(outcome) => Ok(RefundRequested {
            refund_id,
            amount,
            position: outcome.last_position(),
        }),
        Err(CommandError::Rejected(err)) => Err(match err {
            UpsellError::RefundTooLarge { .. } | UpsellError::RefundIdReused => {
                let field = if matches!(err, UpsellError::RefundIdReused) {
                    "refund_id"
                } else {
                    "amount"
                };
                UpsellsError::Invalid(vec![FieldError::new(field, err.to_string())])
            }
            UpsellError::NotFound => UpsellsError::NotFound("acceptance".into()),
            other => UpsellsError::Refused(other.to_string()),
        }),
        Err(err) => Err(UpsellsError::of_command(err)),
    }
}

/// What the hosted page shows for a token.
#[derive(Debug, Clone)]
pub struct PageView {
    pub claims: UpsellClaims,
    pub token: String,
    /// The decision on this step, if made.
    pub acceptance: Option<UpsellAcceptance>,
    /// The offer and its price, while undecided (an offer archived since is `None`, with the
    /// reason).
    pub offer: Option<(OfferDefinition, Quote)>,
    pub ineligible: Option<String>,
    /// Where the funnel goes next once the step is decided for good.
    pub next: Option<Next>,
    pub now: DateTime<Utc>,
    /// Whether the in-page SCA step may run (`upsells.sca_modal_enabled`).
    pub sca_modal: bool,
}

/// What the hosted page shows: the offer while the step is undecided and the token valid, or
/// the decision's state (and then where the funnel goes next).
pub async fn page(core: &Core, token: &str) -> Result<PageView, UpsellsError> {
    let claims = signed_claims(core, token)?;
    let now = core.clock.now();
    let settings = core.settings().await?;
    let acceptance = load_acceptance(core, &acceptance_of(&claims)).await?;
    let mut view = PageView {
        claims: claims.clone(),
        token: token.to_owned(),
        acceptance: None,
        offer: None,
        ineligible: None,
        next: None,
        now,
        sca_modal: settings.upsells.sca_modal_enabled,
    };
    if let Some(status) = acceptance.status() {
        use AcceptanceStatus as S;
        let branch = match status {
            S::Succeeded | S::Accepted => Some(FunnelOutcome::Accepted),
            S::Declined | S::DeclinedByShopper => Some(FunnelOutcome::Declined),
            S::Charging | S::Unknown | S::RequiresAction => None,
        };
        if let Some(branch) = branch {
            view.next = Some(next_page(core, &claims, &acceptance, branch).await?);
        }
        view.acceptance = Some(acceptance);
        return Ok(view);
    }
    // Undecided: the token must still be valid to show the offer.
    live_claims(core, token)?;
    match step_facts(core, &claims).await {
        Ok(facts) => view.offer = Some((facts.offer, facts.quote)),
        Err(UpsellsError::Ineligible(why)) => view.ineligible = Some(why),
        Err(other) => return Err(other),
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_printable_ascii_up_to_255() {
        for (rule, raw, ok) in [
            ("a uuid", "3f0e9c1e-6a7d-4b8e-9a43-1f2b3c4d5e6f", true),
            ("spaces are printable", "a b", true),
            ("empty", "", false),
            ("a control character", "a\u{1}b", false),
            ("non-ASCII", "clé", false),
        ] {
            assert_eq!(check_idempotency_key(raw).is_ok(), ok, "{rule}");
        }
        assert!(check_idempotency_key(&"k".repeat(255)).is_ok());
        assert!(check_idempotency_key(&"k".repeat(256)).is_err());
    }

    #[test]
    fn return_urls_are_http_and_bounded() {
        for (raw, ok) in [
            ("https://shop.test/thanks?order=1", true),
            ("http://shop.test/", true),
            ("http://0", true),
            ("javascript:alert(1)", false),
            ("https://", false),
            ("http://", false),
            ("https://shop.test/a b", false),
        ] {
            assert_eq!(check_return_url(raw).is_ok(), ok, "{raw}");
        }
        assert!(check_return_url(&format!("https://s.test/{}", "a".repeat(2100))).is_err());
    }

    #[test]
    fn one_key_is_held_once_at_a_time() {
        let first = InFlight::take("accept", Some("k-held")).unwrap();
        assert!(matches!(
            InFlight::take("accept", Some("k-held")),
            Err(UpsellsError::InFlight)
        ));
        assert!(
            InFlight::take("decline", Some("k-held")).unwrap().is_some(),
            "keys are scoped by route"
        );
        drop(first);
        assert!(InFlight::take("accept", Some("k-held")).unwrap().is_some());
        assert!(InFlight::take("accept", None).unwrap().is_none());
    }

    #[test]
    fn gateway_answers_map_to_the_domain() {
        assert_eq!(
            charge_result(ChargeOutcome::RequiresAction {
                charge_ref: "pi".into(),
                action_url: Some("https://a.test".into()),
                client_secret: Some("secret".into()),
            }),
            ChargeResult::RequiresAction {
                charge_ref: "pi".into(),
                action_url: Some("https://a.test".into()),
            }
        );
        assert_eq!(
            charge_result(ChargeOutcome::Unknown {
                charge_ref: None,
                reason: "timeout".into(),
            }),
            ChargeResult::Unknown {
                charge_ref: None,
                reason: "timeout".into(),
            }
        );
    }
}
