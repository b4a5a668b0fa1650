//! `POST /ocart/v1/checkout/capture`: the public endpoint the store's checkout calls.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use ocart_domain::cart::Consent;
use ocart_domain::{
    line_total, lines_total, CartItem, CartTotals, Currency, Email, FieldError, Money, Phone,
    ProductId, Source, Stage, MAX_AMOUNT, MAX_CART_ITEMS, MAX_QUANTITY,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::json::JsonBody;
use crate::state::{AppState, RequestContext};
use crate::usecases::capture::{self as usecase, Capture, CaptureError};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(capture))
}

/// A cart line as the store sends it. Prices are integer minor units.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ItemRequest {
    /// The store's id: an integer (WooCommerce) or a string of 1 to 100 characters, kept as
    /// given.
    #[serde(deserialize_with = "crate::json::with_whole_numbers")]
    #[schema(value_type = ProductIdBody)]
    pub product_id: ProductId,
    #[serde(default, deserialize_with = "crate::json::with_whole_numbers")]
    #[schema(value_type = Option<ProductIdBody>)]
    pub variation_id: Option<ProductId>,
    #[serde(default)]
    #[schema(max_length = 100)]
    pub sku: Option<String>,
    /// Not blank; at most 200 characters.
    #[schema(max_length = 200, pattern = "\\S")]
    pub name: String,
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 1, maximum = 10000)]
    pub quantity: i64,
    /// Minor units; times the quantity at most 100000000000.
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub unit_price: i64,
    #[serde(default)]
    #[schema(max_items = 20, value_type = Vec<Category>)]
    pub categories: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 2048, pattern = "^https?://")]
    pub image_url: Option<String>,
    /// A subscription product: carts holding one get no recovery coupon.
    #[serde(default)]
    pub subscription: bool,
}

/// A product id as documented: a non-negative integer, or 1 to 100 characters without control
/// characters ([`ProductId`] is what is parsed).
pub struct ProductIdBody;

impl utoipa::PartialSchema for ProductIdBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::Type;
        use utoipa::openapi::{ObjectBuilder, OneOfBuilder};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(u64::MAX)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[^\\u0000-\\u001f\\u007f-\\u009f]{1,100}$")),
            )
            .into()
    }
}

impl ToSchema for ProductIdBody {}

/// A product category name (at most 100 characters).
pub struct Category;

impl utoipa::PartialSchema for Category {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(100))
            .into()
    }
}

impl ToSchema for Category {}

/// Amounts in minor units, each 0 to 100000000000.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TotalsRequest {
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub subtotal: i64,
    #[serde(default, deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub discount: i64,
    #[serde(default, deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub shipping: i64,
    #[serde(default, deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub tax: i64,
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 0, maximum = 100000000000_i64)]
    pub total: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CaptureRequest {
    /// The checkout session; issued in the reply if absent.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9_-]{16,128}$")]
    pub session_token: Option<String>,
    #[schema(value_type = crate::openapi::EmailAddress)]
    pub email: String,
    /// E.164 (spaces, dashes, dots and parentheses are ignored); blank means none.
    #[serde(default)]
    #[schema(pattern = "^( *|\\+[1-9][0-9]{7,14})$")]
    pub phone: Option<String>,
    #[serde(default)]
    #[schema(max_length = 200)]
    pub name: Option<String>,
    /// true consents, false withdraws (the cart is erased).
    #[serde(default)]
    pub consent: Option<bool>,
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub consent_text: Option<String>,
    /// classic, block, hosted or api (default api)
    #[serde(default)]
    #[schema(pattern = "^(classic|block|hosted|api)$")]
    pub source: Option<String>,
    /// cart or checkout (default cart)
    #[serde(default)]
    #[schema(pattern = "^(cart|checkout)$")]
    pub stage: Option<String>,
    /// An active ISO 4217 code.
    #[schema(
        pattern = "^(AED|AFN|ALL|AMD|ANG|AOA|ARS|AUD|AWG|AZN|BAM|BBD|BDT|BGN|BHD|BIF|BMD|BND|BOB|BRL|BSD|BTN|BWP|BYN|BZD|CAD|CDF|CHF|CLP|CNY|COP|CRC|CUP|CVE|CZK|DJF|DKK|DOP|DZD|EGP|ERN|ETB|EUR|FJD|FKP|GBP|GEL|GHS|GIP|GMD|GNF|GTQ|GYD|HKD|HNL|HTG|HUF|IDR|ILS|INR|IQD|IRR|ISK|JMD|JOD|JPY|KES|KGS|KHR|KMF|KPW|KRW|KWD|KYD|KZT|LAK|LBP|LKR|LRD|LSL|LYD|MAD|MDL|MGA|MKD|MMK|MNT|MOP|MRU|MUR|MVR|MWK|MXN|MYR|MZN|NAD|NGN|NIO|NOK|NPR|NZD|OMR|PAB|PEN|PGK|PHP|PKR|PLN|PYG|QAR|RON|RSD|RUB|RWF|SAR|SBD|SCR|SDG|SEK|SGD|SHP|SLE|SOS|SRD|SSP|STN|SVC|SYP|SZL|THB|TJS|TMT|TND|TOP|TRY|TTD|TWD|TZS|UAH|UGX|USD|UYU|UZS|VES|VND|VUV|WST|XAF|XCD|XCG|XOF|XPF|YER|ZAR|ZMW|ZWG)$"
    )]
    pub currency: String,
    #[schema(min_items = 1, max_items = 500)]
    pub items: Vec<ItemRequest>,
    /// Computed from the items when absent.
    #[serde(default)]
    pub totals: Option<TotalsRequest>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CaptureReply {
    pub cart_id: String,
    /// Keep it in the checkout session and send it with every capture.
    pub session_token: String,
    /// Whether the capture was accepted for keeping (false without consent). A shopper on the
    /// suppression list gets the same answer as anyone, but their cart is not kept.
    pub captured: bool,
    pub status: String,
    /// Global position of the last event written, for read-your-writes (`OCart-Position`).
    pub position: Option<i64>,
}

fn check_len(errors: &mut Vec<FieldError>, field: &str, value: &str, max: usize) {
    if value.chars().count() > max {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
}

/// Bounds are the same in every currency; this one stands in while the currency is invalid.
const FALLBACK_CURRENCY: Currency = Currency::EUR;

/// The request as typed capture input (personal fields still in clear text), or every bad
/// field named.
fn validate(req: CaptureRequest) -> Result<Capture, CaptureError> {
    let mut e = Vec::new();
    if let Some(token) = &req.session_token {
        let ok = (16..=128).contains(&token.len())
            && token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            e.push(FieldError::new(
                "session_token",
                "must be 16 to 128 characters of A-Z, a-z, 0-9, - and _",
            ));
        }
    }
    let email = Email::parse("email", &req.email)
        .map_err(|err| e.push(err))
        .ok();
    let phone = match req
        .phone
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        Some(raw) => Phone::parse("phone", raw).map_err(|err| e.push(err)).ok(),
        None => None,
    };
    let name = req
        .name
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    if let Some(name) = &name {
        check_len(&mut e, "name", name, 200);
    }
    if let Some(text) = &req.consent_text {
        check_len(&mut e, "consent_text", text, 2000);
    }
    let source = match req.source.as_deref().unwrap_or("api") {
        "classic" => Some(Source::Classic),
        "block" => Some(Source::Block),
        "hosted" => Some(Source::Hosted),
        "api" => Some(Source::Api),
        other => {
            e.push(FieldError::new(
                "source",
                format!("must be classic, block, hosted or api, not {other:?}"),
            ));
            None
        }
    };
    let stage = match req.stage.as_deref().unwrap_or("cart") {
        "cart" => Some(Stage::Cart),
        "checkout" => Some(Stage::Checkout),
        other => {
            e.push(FieldError::new(
                "stage",
                format!("must be cart or checkout, not {other:?}"),
            ));
            None
        }
    };
    let currency = Currency::parse("currency", &req.currency)
        .map_err(|err| e.push(err))
        .ok();
    if req.items.is_empty() {
        e.push(FieldError::new("items", "must hold at least one item"));
    }
    if req.items.len() > MAX_CART_ITEMS {
        e.push(FieldError::new(
            "items",
            format!(
                "must hold at most {MAX_CART_ITEMS} items, got {}",
                req.items.len()
            ),
        ));
    }
    let mut items = Vec::with_capacity(req.items.len().min(MAX_CART_ITEMS));
    for (i, item) in req.items.into_iter().enumerate().take(MAX_CART_ITEMS) {
        let at = |f: &str| format!("items[{i}].{f}");
        if item.quantity <= 0 || item.quantity > i64::from(MAX_QUANTITY) {
            e.push(FieldError::new(
                at("quantity"),
                format!(
                    "must be between 1 and {MAX_QUANTITY}, got {}",
                    item.quantity
                ),
            ));
        }
        if let Err(err) = Money::new(item.unit_price, currency.unwrap_or(FALLBACK_CURRENCY)) {
            e.push(FieldError::new(
                at("unit_price"),
                format!("{err}, got {}", item.unit_price),
            ));
        } else if let Ok(quantity) = u32::try_from(item.quantity) {
            if line_total(item.unit_price, quantity).is_none() {
                e.push(FieldError::new(
                    at("unit_price"),
                    format!(
                        "times the quantity must be at most {MAX_AMOUNT} minor units, got {} × {}",
                        item.unit_price, item.quantity
                    ),
                ));
            }
        }
        if item.name.trim().is_empty() {
            e.push(FieldError::new(at("name"), "must not be empty"));
        }
        check_len(&mut e, &at("name"), &item.name, 200);
        if let Some(sku) = &item.sku {
            check_len(&mut e, &at("sku"), sku, 100);
        }
        if item.categories.len() > 20 {
            e.push(FieldError::new(
                at("categories"),
                "must hold at most 20 categories",
            ));
        }
        for (j, category) in item.categories.iter().enumerate() {
            check_len(
                &mut e,
                &format!("items[{i}].categories[{j}]"),
                category,
                100,
            );
        }
        if let Some(url) = &item.image_url {
            check_len(&mut e, &at("image_url"), url, 2048);
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                e.push(FieldError::new(at("image_url"), "must be an http(s) URL"));
            }
        }
        items.push(CartItem {
            product_id: item.product_id,
            variation_id: item.variation_id,
            sku: item.sku,
            name: item.name.trim().to_owned(),
            quantity: u32::try_from(item.quantity).unwrap_or(0),
            unit_price: item.unit_price,
            categories: item.categories,
            image_url: item.image_url,
            subscription: item.subscription,
        });
    }
    let totals = match req.totals {
        Some(t) => {
            for (field, value) in [
                ("subtotal", t.subtotal),
                ("discount", t.discount),
                ("shipping", t.shipping),
                ("tax", t.tax),
                ("total", t.total),
            ] {
                if let Err(err) = Money::new(value, currency.unwrap_or(FALLBACK_CURRENCY)) {
                    e.push(FieldError::new(
                        format!("totals.{field}"),
                        format!("{err}, got {value}"),
                    ));
                }
            }
            CartTotals {
                subtotal: t.subtotal,
                discount: t.discount,
                shipping: t.shipping,
                tax: t.tax,
                total: t.total,
            }
        }
        None => {
            let subtotal = match lines_total(items.iter().map(|i| (i.unit_price, i.quantity))) {
                Some(subtotal) => subtotal,
                None => {
                    e.push(FieldError::new(
                        "items",
                        format!("must total at most {MAX_AMOUNT} minor units"),
                    ));
                    0
                }
            };
            CartTotals {
                subtotal,
                total: subtotal,
                ..CartTotals::default()
            }
        }
    };
    match (email, source, stage, currency) {
        (Some(email), Some(source), Some(stage), Some(currency)) if e.is_empty() => Ok(Capture {
            session_token: req.session_token,
            email,
            phone,
            name,
            consent: Consent {
                given: req.consent,
                text: req.consent_text,
            },
            source,
            stage,
            currency,
            items,
            totals,
        }),
        _ => Err(CaptureError::Invalid(e)),
    }
}

/// Captures (creates or updates) the cart of a checkout session.
#[utoipa::path(
    post, path = "/ocart/v1/checkout/capture", tag = "checkout",
    request_body = CaptureRequest,
    responses(
        (status = 202, description = "Accepted; `captured` says whether the cart is kept", body = CaptureReply),
        (status = 400, description = "Malformed JSON", body = crate::error::Problem),
        (status = 413, description = "Body over 64 KiB", body = crate::error::Problem),
        (status = 415, description = "Content-Type neither application/json nor text/plain", body = crate::error::Problem),
        (status = 422, description = "Invalid fields, each named", body = crate::error::Problem),
        (status = 409, description = "The cart is converted or expired (start a new checkout session), or was changed by concurrent requests (retry)", body = crate::error::Problem),
        (status = 429, description = "Rate limited; see Retry-After", body = crate::error::Problem),
        (status = 503, description = "The store is unavailable; see Retry-After", body = crate::error::Problem),
    )
)]
pub async fn capture(
    State(state): State<AppState>,
    ctx: RequestContext,
    JsonBody(request): JsonBody<CaptureRequest>,
) -> Result<(StatusCode, Json<CaptureReply>), ApiError> {
    let input = validate(request)?;
    let meta = ctx.meta("public:checkout".into(), &state);
    let captured = usecase::capture(&state.core, input, &meta).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(CaptureReply {
            cart_id: captured.cart_id,
            session_token: captured.session_token,
            captured: captured.captured,
            status: captured
                .status
                .map_or("not_captured", |status| status.as_str())
                .to_owned(),
            position: captured.position,
        }),
    ))
}
