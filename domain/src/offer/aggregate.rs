//! The `Offer` aggregate: a bump, upsell or downsell as the store owner defines it — its
//! product, pricing, targeting and display — created, updated (the full definition each time)
//! and archived. A definition is parsed from its JSON form by [`OfferDefinition::parse`],
//! which names every field it refuses; the stored form is the same JSON.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{BumpPricing, Percent, PricingError, Quote, Targeting, UpsellPricing};
use crate::money::{Money, MAX_AMOUNT};
use crate::values::{Currency, FieldError, ProductId};

/// The longest offer name.
pub const MAX_NAME_LEN: usize = 200;
/// The longest headline.
pub const MAX_HEADLINE_LEN: usize = 200;
/// The longest copy.
pub const MAX_COPY_LEN: usize = 2000;
/// The longest image URL.
pub const MAX_IMAGE_URL_LEN: usize = 2048;
/// The largest upsell page template, in bytes.
pub const MAX_PAGE_TEMPLATE_BYTES: usize = 64 * 1024;
/// The most of the product one offer adds.
pub const MAX_OFFER_QUANTITY: u32 = 999;

/// What an offer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferKind {
    /// Added to the order at checkout.
    Bump,
    /// Offered after checkout, charged to the saved payment method.
    Upsell,
    /// Offered after an upsell is declined.
    Downsell,
}

impl OfferKind {
    /// The kind as stored and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bump => "bump",
            Self::Upsell => "upsell",
            Self::Downsell => "downsell",
        }
    }

    /// Parses `bump`, `upsell` or `downsell`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        match raw {
            "bump" => Ok(Self::Bump),
            "upsell" => Ok(Self::Upsell),
            "downsell" => Ok(Self::Downsell),
            _ => Err(FieldError::new(
                field,
                "must be one of bump, upsell, downsell",
            )),
        }
    }

    /// Whether this kind is priced as an upsell (upsells and downsells).
    pub fn is_upsell(self) -> bool {
        !matches!(self, Self::Bump)
    }
}

/// Whether an offer is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferStatus {
    Active,
    Archived,
}

impl OfferStatus {
    /// The status as stored and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Archived => "archived",
        }
    }
}

/// The product an offer adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferProduct {
    pub product_id: ProductId,
    pub name: String,
    /// The product's regular price in minor units of the offer's currency, when given.
    #[serde(default)]
    pub price: Option<i64>,
    /// How many of the product (1 to 999).
    pub quantity: u32,
}

/// A percentage as the wire writes it: a decimal string (or number) with at most two
/// decimals; stored as the decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PercentValue(pub Percent);

impl PercentValue {
    /// The percentage as a decimal string (`"12.5"`, `"10"`).
    pub fn decimal(self) -> String {
        let bp = self.0.basis_points();
        let (whole, frac) = (bp / 100, bp % 100);
        match frac {
            0 => whole.to_string(),
            f if f % 10 == 0 => format!("{whole}.{}", f / 10),
            f => format!("{whole}.{f:02}"),
        }
    }

    fn from_json(field: &str, value: &Value) -> Result<Self, FieldError> {
        let raw = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(FieldError::new(
                    field,
                    "must be a percentage from 0 to 100 (a decimal string or number)",
                ))
            }
        };
        Percent::parse(field, &raw).map(Self)
    }
}

impl Serialize for PercentValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.decimal())
    }
}

impl<'de> Deserialize<'de> for PercentValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Self::from_json("value", &value).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// How an offer is priced, tagged by `type`: bumps `fixed_addon`, `percent_addon`,
/// `free_gift`; upsells and downsells `price`, `discount_pct`. Amounts in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OfferPricing {
    FixedAddon { amount: i64 },
    PercentAddon { value: PercentValue },
    FreeGift { cart_min_total: i64 },
    Price { amount: i64 },
    DiscountPct { value: PercentValue },
}

impl OfferPricing {
    /// The `type` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::FixedAddon { .. } => "fixed_addon",
            Self::PercentAddon { .. } => "percent_addon",
            Self::FreeGift { .. } => "free_gift",
            Self::Price { .. } => "price",
            Self::DiscountPct { .. } => "discount_pct",
        }
    }

    fn for_upsells(&self) -> bool {
        matches!(self, Self::Price { .. } | Self::DiscountPct { .. })
    }
}

/// Where the checkout shows a bump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BumpPosition {
    #[default]
    AbovePayment,
    InShipping,
    InSummary,
}

impl BumpPosition {
    /// The position as stored and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AbovePayment => "above_payment",
            Self::InShipping => "in_shipping",
            Self::InSummary => "in_summary",
        }
    }
}

/// How an offer is shown.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OfferDisplay {
    #[serde(default)]
    pub position: BumpPosition,
    #[serde(default)]
    pub headline: String,
    #[serde(default)]
    pub copy: String,
    #[serde(default)]
    pub image_url: Option<String>,
}

/// An offer's full definition, as created and as each update restates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfferDefinition {
    pub kind: OfferKind,
    pub name: String,
    pub currency: Currency,
    pub product: OfferProduct,
    pub pricing: OfferPricing,
    #[serde(default)]
    pub targeting: Targeting,
    #[serde(default)]
    pub display: OfferDisplay,
    /// A minijinja HTML template overriding the hosted upsell page (upsells only).
    #[serde(default)]
    pub page_template: Option<String>,
}

fn field<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn text(
    obj: &serde_json::Map<String, Value>,
    key: &str,
    path: &str,
    max: usize,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match field(obj, key) {
        None if required => {
            errors.push(FieldError::new(path, "is required"));
            None
        }
        None => None,
        Some(Value::String(s)) => {
            let s = s.trim();
            let n = s.chars().count();
            if required && n == 0 {
                errors.push(FieldError::new(path, "must not be empty"));
            } else if n > max {
                errors.push(FieldError::new(path, format!("at most {max} characters")));
            } else if s
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
            {
                errors.push(FieldError::new(path, "must not hold control characters"));
            } else {
                return Some(s.to_owned());
            }
            None
        }
        Some(_) => {
            errors.push(FieldError::new(path, "must be a string"));
            None
        }
    }
}

fn amount(value: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let Some(value) = value else {
        errors.push(FieldError::new(path, "is required"));
        return None;
    };
    match value.as_i64() {
        Some(n) if (0..=MAX_AMOUNT).contains(&n) => Some(n),
        _ => {
            errors.push(FieldError::new(
                path,
                format!("must be an integer from 0 to {MAX_AMOUNT} minor units"),
            ));
            None
        }
    }
}

impl OfferDefinition {
    /// Parses and checks a definition from its JSON form; `default_kind` applies when `kind` is
    /// absent. Every refusal names its field (`pricing.type`, `product.quantity`, …).
    pub fn parse(value: &Value, default_kind: OfferKind) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(obj) = value.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let kind = match field(obj, "kind") {
            None => Some(default_kind),
            Some(Value::String(s)) => match OfferKind::parse("kind", s) {
                Ok(k) => Some(k),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            Some(_) => {
                errors.push(FieldError::new("kind", "must be a string"));
                None
            }
        };
        let name = text(obj, "name", "name", MAX_NAME_LEN, true, &mut errors);
        let currency = match field(obj, "currency") {
            Some(Value::String(s)) => Currency::parse("currency", s)
                .map_err(|e| errors.push(e))
                .ok(),
            Some(_) => {
                errors.push(FieldError::new("currency", "must be an ISO 4217 code"));
                None
            }
            None => {
                errors.push(FieldError::new("currency", "is required"));
                None
            }
        };
        let product = Self::parse_product(field(obj, "product"), &mut errors);
        let pricing = Self::parse_pricing(field(obj, "pricing"), kind, &mut errors);
        if let (Some(OfferPricing::DiscountPct { .. }), Some(p)) = (&pricing, &product) {
            if p.price.is_none() {
                errors.push(FieldError::new(
                    "product.price",
                    "is required for discount_pct pricing",
                ));
            }
        }
        let targeting = match field(obj, "targeting") {
            None => Targeting::default(),
            Some(v) => match serde_json::from_value::<Targeting>(v.clone()) {
                Ok(t) => {
                    if let Err(mut e) = t.validate("targeting") {
                        errors.append(&mut e);
                    }
                    t
                }
                Err(e) => {
                    errors.push(FieldError::new("targeting", format!("is not a rule: {e}")));
                    Targeting::default()
                }
            },
        };
        let display = Self::parse_display(field(obj, "display"), &mut errors);
        let page_template = match field(obj, "page_template") {
            None => None,
            Some(Value::String(s)) if s.len() > MAX_PAGE_TEMPLATE_BYTES => {
                errors.push(FieldError::new(
                    "page_template",
                    format!("at most {MAX_PAGE_TEMPLATE_BYTES} bytes"),
                ));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errors.push(FieldError::new("page_template", "must be a string"));
                None
            }
        };
        if page_template.is_some() && kind == Some(OfferKind::Bump) {
            errors.push(FieldError::new(
                "page_template",
                "only upsells and downsells have a page",
            ));
        }
        match (kind, name, currency, product, pricing, errors.is_empty()) {
            (Some(kind), Some(name), Some(currency), Some(product), Some(pricing), true) => {
                let definition = Self {
                    kind,
                    name,
                    currency,
                    product,
                    pricing,
                    targeting,
                    display,
                    page_template,
                };
                // Amounts within bounds may still not price (never: checked above), but a
                // definition that cannot be turned into money is refused here, not at checkout.
                if let Err(e) = definition.money_rules() {
                    return Err(vec![FieldError::new("pricing", e.to_string())]);
                }
                Ok(definition)
            }
            _ => Err(errors),
        }
    }

    fn parse_product(value: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<OfferProduct> {
        let Some(value) = value else {
            errors.push(FieldError::new("product", "is required"));
            return None;
        };
        let Some(obj) = value.as_object() else {
            errors.push(FieldError::new("product", "must be an object"));
            return None;
        };
        let product_id = match field(obj, "product_id") {
            Some(Value::Number(n)) => n.as_u64().map(ProductId::Number),
            Some(Value::String(s)) => ProductId::text(s).ok(),
            _ => None,
        };
        if product_id.is_none() {
            errors.push(FieldError::new(
                "product.product_id",
                "must be a non-negative integer, or a string of 1 to 100 characters",
            ));
        }
        let name = text(obj, "name", "product.name", MAX_NAME_LEN, true, errors);
        let price = match field(obj, "price") {
            None => Some(None),
            v => amount(v, "product.price", errors).map(Some),
        };
        let quantity = match field(obj, "quantity") {
            None => Some(1),
            Some(v) => match v.as_u64() {
                Some(q) if (1..=u64::from(MAX_OFFER_QUANTITY)).contains(&q) => {
                    u32::try_from(q).ok()
                }
                _ => {
                    errors.push(FieldError::new(
                        "product.quantity",
                        format!("must be an integer from 1 to {MAX_OFFER_QUANTITY}"),
                    ));
                    None
                }
            },
        };
        Some(OfferProduct {
            product_id: product_id?,
            name: name?,
            price: price?,
            quantity: quantity?,
        })
    }

    fn parse_pricing(
        value: Option<&Value>,
        kind: Option<OfferKind>,
        errors: &mut Vec<FieldError>,
    ) -> Option<OfferPricing> {
        let Some(obj) = value.and_then(Value::as_object) else {
            errors.push(FieldError::new(
                "pricing",
                "is required: an object with a type",
            ));
            return None;
        };
        let pricing = match field(obj, "type").and_then(Value::as_str) {
            Some("fixed_addon") => OfferPricing::FixedAddon {
                amount: amount(field(obj, "amount"), "pricing.amount", errors)?,
            },
            Some("free_gift") => OfferPricing::FreeGift {
                cart_min_total: amount(
                    field(obj, "cart_min_total"),
                    "pricing.cart_min_total",
                    errors,
                )?,
            },
            Some("price") => OfferPricing::Price {
                amount: amount(field(obj, "amount"), "pricing.amount", errors)?,
            },
            Some(t @ ("percent_addon" | "discount_pct")) => {
                let value = match field(obj, "value") {
                    Some(v) => PercentValue::from_json("pricing.value", v),
                    None => Err(FieldError::new("pricing.value", "is required")),
                }
                .map_err(|e| errors.push(e))
                .ok()?;
                if t == "percent_addon" {
                    OfferPricing::PercentAddon { value }
                } else {
                    OfferPricing::DiscountPct { value }
                }
            }
            _ => {
                errors.push(FieldError::new(
                    "pricing.type",
                    "must be one of fixed_addon, percent_addon, free_gift (bumps), price, \
                     discount_pct (upsells and downsells)",
                ));
                return None;
            }
        };
        let kind = kind?;
        if pricing.for_upsells() != kind.is_upsell() {
            let allowed = if kind.is_upsell() {
                "price or discount_pct"
            } else {
                "fixed_addon, percent_addon or free_gift"
            };
            errors.push(FieldError::new(
                "pricing.type",
                format!(
                    "{} does not price a {}; use {allowed}",
                    pricing.type_name(),
                    kind.as_str()
                ),
            ));
            return None;
        }
        Some(pricing)
    }

    fn parse_display(value: Option<&Value>, errors: &mut Vec<FieldError>) -> OfferDisplay {
        let Some(value) = value else {
            return OfferDisplay::default();
        };
        let Some(obj) = value.as_object() else {
            errors.push(FieldError::new("display", "must be an object"));
            return OfferDisplay::default();
        };
        let position = match field(obj, "position") {
            None => BumpPosition::default(),
            Some(v) => serde_json::from_value(v.clone()).unwrap_or_else(|_| {
                errors.push(FieldError::new(
                    "display.position",
                    "must be one of above_payment, in_shipping, in_summary",
                ));
                BumpPosition::default()
            }),
        };
        let headline = text(
            obj,
            "headline",
            "display.headline",
            MAX_HEADLINE_LEN,
            false,
            errors,
        );
        let copy = text(obj, "copy", "display.copy", MAX_COPY_LEN, false, errors);
        let image_url = text(
            obj,
            "image_url",
            "display.image_url",
            MAX_IMAGE_URL_LEN,
            false,
            errors,
        );
        if let Some(url) = &image_url {
            let lower = url.to_ascii_lowercase();
            let rest = lower
                .strip_prefix("https://")
                .or_else(|| lower.strip_prefix("http://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/') || url.contains(' ')) {
                errors.push(FieldError::new(
                    "display.image_url",
                    "must be an http(s) URL",
                ));
            }
        }
        OfferDisplay {
            position,
            headline: headline.unwrap_or_default(),
            copy: copy.unwrap_or_default(),
            image_url,
        }
    }

    fn money(&self, minor: i64) -> Result<Money, PricingError> {
        Money::new(minor, self.currency).map_err(PricingError::from)
    }

    fn money_rules(&self) -> Result<(), PricingError> {
        self.product.price.map(|p| self.money(p)).transpose()?;
        match &self.pricing {
            OfferPricing::FixedAddon { amount } | OfferPricing::Price { amount } => {
                self.money(*amount).map(drop)
            }
            OfferPricing::FreeGift { cart_min_total } => self.money(*cart_min_total).map(drop),
            OfferPricing::PercentAddon { .. } | OfferPricing::DiscountPct { .. } => Ok(()),
        }
    }

    /// The bump's pricing rule, `None` for an upsell.
    pub fn bump_pricing(&self) -> Option<Result<BumpPricing, PricingError>> {
        Some(match &self.pricing {
            OfferPricing::FixedAddon { amount } => self
                .money(*amount)
                .map(|amount| BumpPricing::FixedAddon { amount }),
            OfferPricing::PercentAddon { value } => {
                Ok(BumpPricing::PercentAddon { percent: value.0 })
            }
            OfferPricing::FreeGift { cart_min_total } => self
                .money(*cart_min_total)
                .map(|cart_min_total| BumpPricing::FreeGift { cart_min_total }),
            OfferPricing::Price { .. } | OfferPricing::DiscountPct { .. } => return None,
        })
    }

    /// What the offer costs a cart with this subtotal: a bump by its rule (the product's price
    /// shown as the regular price of a free gift), an upsell by [`Self::quote`].
    pub fn quote_for(&self, subtotal: Money) -> Result<Quote, PricingError> {
        let regular = self.product.price.map(|p| self.money(p)).transpose()?;
        match self.bump_pricing() {
            Some(rule) => rule?.quote(subtotal, regular),
            None => self.quote(),
        }
    }

    /// What an upsell or downsell costs: its price against the product's price. A set price
    /// without a product price is quoted plain. A bump's fixed add-on quotes alike; its other
    /// rules need a cart ([`Self::quote_for`]) and are refused as below the minimum.
    pub fn quote(&self) -> Result<Quote, PricingError> {
        let regular = self.product.price.map(|p| self.money(p)).transpose()?;
        match (&self.pricing, regular) {
            (OfferPricing::Price { amount }, Some(regular)) => UpsellPricing::Price {
                amount: self.money(*amount)?,
            }
            .quote(regular),
            (OfferPricing::DiscountPct { value }, Some(regular)) => {
                UpsellPricing::DiscountPct { percent: value.0 }.quote(regular)
            }
            (OfferPricing::Price { amount } | OfferPricing::FixedAddon { amount }, _) => {
                let price = self.money(*amount)?;
                Ok(Quote {
                    price,
                    regular: None,
                    saving: Money::zero(self.currency),
                })
            }
            _ => Err(PricingError::BelowMinimum),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum OfferCommand {
    Create {
        definition: Box<OfferDefinition>,
        at: DateTime<Utc>,
    },
    Update {
        definition: Box<OfferDefinition>,
        at: DateTime<Utc>,
    },
    Archive {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum OfferEvent {
    #[serde(rename = "offer/created")]
    Created {
        definition: Box<OfferDefinition>,
        at: DateTime<Utc>,
    },
    /// The full definition after the update.
    #[serde(rename = "offer/updated")]
    Updated {
        definition: Box<OfferDefinition>,
        at: DateTime<Utc>,
    },
    #[serde(rename = "offer/archived")]
    Archived { at: DateTime<Utc> },
}

impl DomainEvent for OfferEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created { .. } => "offer/created",
            Self::Updated { .. } => "offer/updated",
            Self::Archived { .. } => "offer/archived",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    #[error("the offer already exists")]
    AlreadyExists,
    #[error("no such offer")]
    NotFound,
    #[error("the offer is archived")]
    Archived,
    /// A bump cannot become an upsell or the other way round.
    #[error("a {from} cannot become a {to}")]
    KindChange {
        from: &'static str,
        to: &'static str,
    },
}

/// An offer: its definition and status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    definition: Option<OfferDefinition>,
    archived: bool,
}

impl Offer {
    /// The definition in force, `None` before creation.
    pub fn definition(&self) -> Option<&OfferDefinition> {
        self.definition.as_ref()
    }

    /// Its status, `None` before creation.
    pub fn status(&self) -> Option<OfferStatus> {
        self.definition.as_ref().map(|_| {
            if self.archived {
                OfferStatus::Archived
            } else {
                OfferStatus::Active
            }
        })
    }
}

impl Aggregate for Offer {
    const TYPE: &'static str = "offer";
    type Command = OfferCommand;
    type Event = OfferEvent;
    type Error = OfferError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            OfferCommand::Create { definition, at } => {
                if self.definition.is_some() {
                    return Err(OfferError::AlreadyExists);
                }
                OfferEvent::Created { definition, at }
            }
            OfferCommand::Update { definition, at } => {
                let current = self.definition.as_ref().ok_or(OfferError::NotFound)?;
                if self.archived {
                    return Err(OfferError::Archived);
                }
                if current.kind.is_upsell() != definition.kind.is_upsell() {
                    return Err(OfferError::KindChange {
                        from: current.kind.as_str(),
                        to: definition.kind.as_str(),
                    });
                }
                if *current == *definition {
                    return Ok(());
                }
                OfferEvent::Updated { definition, at }
            }
            OfferCommand::Archive { at } => {
                if self.definition.is_none() {
                    return Err(OfferError::NotFound);
                }
                if self.archived {
                    return Ok(());
                }
                OfferEvent::Archived { at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OfferEvent::Created { definition, .. } | OfferEvent::Updated { definition, .. } => {
                self.definition = Some(*definition);
            }
            OfferEvent::Archived { .. } => self.archived = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn bump(pricing: Value) -> Value {
        json!({
            "name": "Gift wrap",
            "currency": "EUR",
            "product": {"product_id": 7, "name": "Wrap", "price": 1500, "quantity": 1},
            "pricing": pricing,
        })
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::EUR).unwrap()
    }

    #[test]
    fn definitions_parse_or_name_the_field_they_refuse() {
        let cases: Vec<(&str, Value, OfferKind, Result<(), &str>)> = vec![
            (
                "a fixed add-on bump",
                bump(json!({"type": "fixed_addon", "amount": 2400})),
                OfferKind::Bump,
                Ok(()),
            ),
            (
                "a percent add-on as a string",
                bump(json!({"type": "percent_addon", "value": "12.5"})),
                OfferKind::Bump,
                Ok(()),
            ),
            (
                "a percent add-on as a number",
                bump(json!({"type": "percent_addon", "value": 10})),
                OfferKind::Bump,
                Ok(()),
            ),
            (
                "three decimals are refused",
                bump(json!({"type": "percent_addon", "value": "1.005"})),
                OfferKind::Bump,
                Err("pricing.value"),
            ),
            (
                "upsell pricing on a bump names pricing.type",
                bump(json!({"type": "price", "amount": 1999})),
                OfferKind::Bump,
                Err("pricing.type"),
            ),
            (
                "bump pricing on an upsell names pricing.type",
                bump(json!({"type": "free_gift", "cart_min_total": 5000})),
                OfferKind::Upsell,
                Err("pricing.type"),
            ),
            (
                "an unknown type names pricing.type",
                bump(json!({"type": "bogo"})),
                OfferKind::Bump,
                Err("pricing.type"),
            ),
            (
                "an amount past the maximum names pricing.amount",
                bump(json!({"type": "fixed_addon", "amount": 100_000_000_001_i64})),
                OfferKind::Bump,
                Err("pricing.amount"),
            ),
            (
                "a negative amount names pricing.amount",
                bump(json!({"type": "fixed_addon", "amount": -1})),
                OfferKind::Bump,
                Err("pricing.amount"),
            ),
            (
                "a discount needs the product's price",
                json!({"name": "n", "currency": "EUR", "kind": "upsell",
                       "product": {"product_id": 1, "name": "p", "quantity": 1},
                       "pricing": {"type": "discount_pct", "value": "15"}}),
                OfferKind::Upsell,
                Err("product.price"),
            ),
            (
                "a quantity past 999 names product.quantity",
                json!({"name": "n", "currency": "EUR",
                       "product": {"product_id": 1, "name": "p", "quantity": 1000},
                       "pricing": {"type": "fixed_addon", "amount": 1}}),
                OfferKind::Bump,
                Err("product.quantity"),
            ),
            (
                "an unknown currency names currency",
                json!({"name": "n", "currency": "XYZ",
                       "product": {"product_id": 1, "name": "p"},
                       "pricing": {"type": "fixed_addon", "amount": 1}}),
                OfferKind::Bump,
                Err("currency"),
            ),
            (
                "an image that is not http(s) names display.image_url",
                {
                    let mut v = bump(json!({"type": "fixed_addon", "amount": 1}));
                    v["display"] = json!({"image_url": "javascript:alert(1)"});
                    v
                },
                OfferKind::Bump,
                Err("display.image_url"),
            ),
            (
                "a bad targeting rule names its path",
                {
                    let mut v = bump(json!({"type": "fixed_addon", "amount": 1}));
                    v["targeting"] = json!({"all": [{"cart_min_total": -5}]});
                    v
                },
                OfferKind::Bump,
                Err("targeting.all[0].cart_min_total"),
            ),
            (
                "a headline past 200 characters names display.headline",
                {
                    let mut v = bump(json!({"type": "fixed_addon", "amount": 1}));
                    v["display"] = json!({"headline": "x".repeat(201)});
                    v
                },
                OfferKind::Bump,
                Err("display.headline"),
            ),
        ];
        for (name, value, kind, expected) in cases {
            let got = OfferDefinition::parse(&value, kind);
            match expected {
                Ok(()) => assert!(got.is_ok(), "{name}: {got:?}"),
                Err(field) => {
                    let errors = got.expect_err(name);
                    assert!(
                        errors.iter().any(|e| e.field == field),
                        "{name}: {errors:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_stored_form_round_trips_and_writes_percentages_as_decimals() {
        let def = OfferDefinition::parse(
            &bump(json!({"type": "percent_addon", "value": 12.5})),
            OfferKind::Bump,
        )
        .unwrap();
        let stored = serde_json::to_value(&def).unwrap();
        assert_eq!(
            stored["pricing"],
            json!({"type": "percent_addon", "value": "12.5"})
        );
        assert_eq!(stored["display"]["position"], "above_payment");
        let back: OfferDefinition = serde_json::from_value(stored).unwrap();
        assert_eq!(back, def);
    }

    #[test]
    fn offers_quote_by_their_pricing() {
        let quote = |pricing: Value, kind, subtotal| {
            let mut v = bump(pricing);
            v["kind"] = json!(kind);
            let def = OfferDefinition::parse(&v, OfferKind::Bump).unwrap();
            def.quote_for(eur(subtotal)).map(|q| {
                (
                    q.price.minor(),
                    q.regular.map(|r| r.minor()),
                    q.saving.minor(),
                )
            })
        };
        let cases = [
            (
                "a fixed add-on costs its amount",
                quote(json!({"type": "fixed_addon", "amount": 2400}), "bump", 5000),
                Ok((2400, None, 0)),
            ),
            (
                "10 % of 49.99 is 5.00",
                quote(
                    json!({"type": "percent_addon", "value": "10"}),
                    "bump",
                    4999,
                ),
                Ok((500, None, 0)),
            ),
            (
                "a free gift is shown against the product's price",
                quote(
                    json!({"type": "free_gift", "cart_min_total": 5000}),
                    "bump",
                    5000,
                ),
                Ok((0, Some(1500), 1500)),
            ),
            (
                "a free gift below its minimum is not offered",
                quote(
                    json!({"type": "free_gift", "cart_min_total": 5000}),
                    "bump",
                    4999,
                ),
                Err(PricingError::BelowMinimum),
            ),
            (
                "15 % off 15.00 is 12.75",
                quote(json!({"type": "discount_pct", "value": "15"}), "upsell", 0),
                Ok((1275, Some(1500), 225)),
            ),
            (
                "a set upsell price against the product's",
                quote(json!({"type": "price", "amount": 999}), "downsell", 0),
                Ok((999, Some(1500), 501)),
            ),
        ];
        for (name, got, expected) in cases {
            assert_eq!(got, expected, "{name}");
        }
    }

    fn definition() -> Box<OfferDefinition> {
        Box::new(
            OfferDefinition::parse(
                &bump(json!({"type": "fixed_addon", "amount": 2400})),
                OfferKind::Bump,
            )
            .unwrap(),
        )
    }

    #[test]
    fn offers_are_created_once_updated_in_full_and_archived_once() {
        let created = OfferEvent::Created {
            definition: definition(),
            at: at(),
        };
        TestFramework::<Offer>::with(())
            .given_no_previous_events()
            .when(OfferCommand::Create {
                definition: definition(),
                at: at(),
            })
            .then_expect_events(vec![created.clone()]);
        TestFramework::<Offer>::with(())
            .given(vec![created.clone()])
            .when(OfferCommand::Create {
                definition: definition(),
                at: at(),
            })
            .then_expect_error(OfferError::AlreadyExists);
        let mut renamed = definition();
        renamed.name = "Wrap it".into();
        TestFramework::<Offer>::with(())
            .given(vec![created.clone()])
            .when(OfferCommand::Update {
                definition: renamed.clone(),
                at: at(),
            })
            .then_expect_events(vec![OfferEvent::Updated {
                definition: renamed,
                at: at(),
            }]);
        TestFramework::<Offer>::with(())
            .given(vec![created.clone()])
            .when(OfferCommand::Update {
                definition: definition(),
                at: at(),
            })
            .then_expect_events(vec![]);
        let mut upsell = definition();
        upsell.kind = OfferKind::Upsell;
        TestFramework::<Offer>::with(())
            .given(vec![created.clone()])
            .when(OfferCommand::Update {
                definition: upsell,
                at: at(),
            })
            .then_expect_error(OfferError::KindChange {
                from: "bump",
                to: "upsell",
            });
        TestFramework::<Offer>::with(())
            .given(vec![created.clone()])
            .when(OfferCommand::Archive { at: at() })
            .then_expect_events(vec![OfferEvent::Archived { at: at() }]);
        let archived = vec![created, OfferEvent::Archived { at: at() }];
        TestFramework::<Offer>::with(())
            .given(archived.clone())
            .when(OfferCommand::Archive { at: at() })
            .then_expect_events(vec![]);
        TestFramework::<Offer>::with(())
            .given(archived)
            .when(OfferCommand::Update {
                definition: definition(),
                at: at(),
            })
            .then_expect_error(OfferError::Archived);
        TestFramework::<Offer>::with(())
            .given_no_previous_events()
            .when(OfferCommand::Archive { at: at() })
            .then_expect_error(OfferError::NotFound);
    }
}
