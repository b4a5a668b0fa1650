use serde::{Deserialize, Serialize};

/// A value that failed validation at the edge, naming the field (JSON path) and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A syntactically valid, normalised email address (trimmed, lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let value = raw.trim().to_lowercase();
        let invalid =
            |why: &str| FieldError::new(field, format!("is not a valid email address: {why}"));
        if value.is_empty() {
            return Err(invalid("it is empty"));
        }
        if value.len() > 254 {
            return Err(invalid("it is longer than 254 characters"));
        }
        let Some((local, domain)) = value.rsplit_once('@') else {
            return Err(invalid("it has no @"));
        };
        if local.is_empty() || local.len() > 64 {
            return Err(invalid("the part before @ must be 1 to 64 characters"));
        }
        if local.contains('@')
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(invalid("the part before @ is malformed"));
        }
        let local_ok = local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~.-".contains(c));
        if !local_ok {
            return Err(invalid(
                "the part before @ has a character that is not allowed",
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(invalid("the domain has no dot"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !ok {
                return Err(invalid("the domain is malformed"));
            }
        }
        Ok(Self(value))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form: `+`, a country code not starting with 0, 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let compact: String = raw
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
            .collect();
        let digits = compact.strip_prefix('+').unwrap_or("");
        let ok = digits.len() >= 8
            && digits.len() <= 15
            && digits.chars().all(|c| c.is_ascii_digit())
            && !digits.starts_with('0');
        if ok {
            Ok(Self(compact))
        } else {
            Err(FieldError::new(
                field,
                "is not an E.164 phone number (+ then 8 to 15 digits, e.g. +14155550123)",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An active ISO 4217 currency code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

const ISO_4217: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL \
BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP \
GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF \
KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN \
NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD \
SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND \
VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG";

impl Currency {
    pub const EUR: Currency = Currency(*b"EUR");

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        let upper = raw.trim().to_ascii_uppercase();
        if upper.len() == 3 && ISO_4217.split_ascii_whitespace().any(|code| code == upper) {
            let bytes = upper.as_bytes();
            Ok(Self([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(FieldError::new(
                field,
                format!("{raw:?} is not an ISO 4217 currency code"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }

    /// Digits after the decimal point in the currency's minor unit (ISO 4217): 0 for JPY,
    /// 3 for KWD, 2 for most.
    pub fn exponent(&self) -> u32 {
        const ZERO: &str = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF";
        const THREE: &str = "BHD IQD JOD KWD LYD OMR TND";
        let code = self.as_str();
        if ZERO.split_ascii_whitespace().any(|c| c == code) {
            0
        } else if THREE.split_ascii_whitespace().any(|c| c == code) {
            3
        } else {
            2
        }
    }

    /// A decimal amount as stores send it (`"39.80"`) in integer minor units of this
    /// currency; refuses signs, exponents and more than 15 whole digits. More decimals than the
    /// currency has are rounded to its minor unit half away from zero, as WooCommerce rounds
    /// (PHP `round`): a store with three price decimals in EUR sends `"39.805"`, which is
    /// `3981` cents. This is OCart's one rounding rule for amounts.
    pub fn parse_decimal(&self, field: &str, raw: &str) -> Result<i64, FieldError> {
        let bad = || {
            FieldError::new(
                field,
                format!(
                    "{raw:?} is not an amount in {} (digits, a point and decimals)",
                    self.as_str(),
                ),
            )
        };
        let raw = raw.trim();
        let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits(whole)
            || !digits(fraction)
            || whole.len() > 15
            || fraction.len() > 30
        {
            return Err(bad());
        }
        let exponent = self.exponent() as usize;
        let (kept, dropped) = fraction.split_at(fraction.len().min(exponent));
        let scaled = format!("{whole}{kept:0<exponent$}");
        let minor = scaled.parse::<i64>().map_err(|_| bad())?;
        let round_up = dropped.as_bytes().first().is_some_and(|d| *d >= b'5');
        minor.checked_add(i64::from(round_up)).ok_or_else(bad)
    }

    /// Minor units as a plain decimal in this currency's own digits (`1000` EUR → `10.00`,
    /// `500` JPY → `500`, `1500` KWD → `1.500`).
    pub fn format_decimal(&self, minor: i64) -> String {
        crate::money::format_decimal(minor, self.exponent())
    }
}

impl TryFrom<String> for Currency {
    type Error = FieldError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse("currency", &value)
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.as_str().to_owned()
    }
}

/// Where a cart was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Classic,
    Block,
    Hosted,
    Api,
}

impl Source {
    /// The wire name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Block => "block",
            Self::Hosted => "hosted",
            Self::Api => "api",
        }
    }
}

/// How far the shopper got: it decides `cart_abandoned` vs `checkout_abandoned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Cart,
    Checkout,
}

impl Stage {
    /// The wire name (as serialised).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cart => "cart",
            Self::Checkout => "checkout",
        }
    }
}

/// A store's product or variation id, kept as the store gave it: a JSON number (WooCommerce's
/// integer ids) or a string (stores whose ids are not numbers). A string is 1 to 100
/// characters without control characters; a number is a non-negative integer up to 2⁶⁴−1.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProductId {
    Number(u64),
    Text(String),
}

/// The longest string product id.
pub const MAX_PRODUCT_ID_LEN: usize = 100;

impl ProductId {
    /// A string id, checked.
    pub fn text(raw: &str) -> Result<Self, &'static str> {
        let chars = raw.chars().count();
        if chars == 0 || chars > MAX_PRODUCT_ID_LEN {
            Err("must be a non-negative integer, or a string of 1 to 100 characters")
        } else if raw.chars().any(char::is_control) {
            Err("must not hold control characters")
        } else {
            Ok(Self::Text(raw.to_owned()))
        }
    }

    /// The id as a WooCommerce product id, when it is a number.
    pub fn as_number(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(_) => None,
        }
    }

    /// The id in a restore link's `ocart_items` (`product[:variation]xquantity,…`): a number as
    /// digits; a string with `%`, `,` and `:` percent-encoded, so the list still splits on `,`,
    /// the product on the first `:` and the quantity after the last `x`.
    pub fn link_form(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::Text(s) => s
                .replace('%', "%25")
                .replace(',', "%2C")
                .replace(':', "%3A"),
        }
    }
}

impl std::fmt::Display for ProductId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => f.write_str(s),
        }
    }
}

impl From<u64> for ProductId {
    fn from(n: u64) -> Self {
        Self::Number(n)
    }
}

impl Serialize for ProductId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Number(n) => serializer.serialize_u64(*n),
            Self::Text(s) => serializer.serialize_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for ProductId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ProductId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a non-negative integer, or a string of 1 to 100 characters")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ProductId, E> {
                Ok(ProductId::Number(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ProductId, E> {
                u64::try_from(n)
                    .map(ProductId::Number)
                    .map_err(|_| E::custom("must not be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ProductId, E> {
                ProductId::text(s).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The most items one cart may hold.
pub const MAX_CART_ITEMS: usize = 500;

/// One line of a cart. Prices are integer minor units of the cart's currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartItem {
    pub product_id: ProductId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variation_id: Option<ProductId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    pub name: String,
    pub quantity: u32,
    pub unit_price: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    /// A subscription product (WooCommerce Subscriptions): no recovery coupon for its cart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub subscription: bool,
}

/// Cart totals in minor units. `total` is what the shopper would pay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartTotals {
    pub subtotal: i64,
    #[serde(default)]
    pub discount: i64,
    #[serde(default)]
    pub shipping: i64,
    #[serde(default)]
    pub tax: i64,
    pub total: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_amounts_become_minor_units_of_their_currency() {
        let cases: &[(&str, &str, &str, Option<i64>)] = &[
            ("two decimals are cents", "EUR", "39.80", Some(3980)),
            ("one decimal is tens of cents", "EUR", "39.8", Some(3980)),
            ("no decimals are whole units", "EUR", "39", Some(3900)),
            ("zero is zero", "EUR", "0.00", Some(0)),
            (
                "a third decimal below five rounds down",
                "EUR",
                "39.804",
                Some(3980),
            ),
            (
                "a third decimal of five rounds half away from zero",
                "EUR",
                "39.805",
                Some(3981),
            ),
            (
                "a third decimal above five rounds up",
                "EUR",
                "39.809",
                Some(3981),
            ),
            (
                "rounding carries into the whole units",
                "EUR",
                "0.995",
                Some(100),
            ),
            (
                "only the first dropped digit decides",
                "EUR",
                "1.00499",
                Some(100),
            ),
            (
                "trailing zeros change nothing",
                "EUR",
                "39.80000",
                Some(3980),
            ),
            ("a sign is refused", "EUR", "-1.00", None),
            ("an exponent is refused", "EUR", "1e3", None),
            ("a missing whole part is refused", "EUR", ".5", None),
            (
                "more than fifteen whole digits are refused",
                "EUR",
                "1234567890123456",
                None,
            ),
            ("multi-byte digits are refused", "EUR", "１.00", None),
            ("yen have no decimals", "JPY", "1200", Some(1200)),
            (
                "zero yen decimals are dropped",
                "JPY",
                "1200.00",
                Some(1200),
            ),
            (
                "yen decimals round half away from zero",
                "JPY",
                "1200.5",
                Some(1201),
            ),
            ("dinars have three decimals", "KWD", "1.5", Some(1500)),
        ];
        for (rule, code, raw, want) in cases {
            let currency = Currency::parse("c", code).unwrap();
            assert_eq!(
                currency.parse_decimal("t", raw).ok(),
                *want,
                "{rule}: {raw}"
            );
        }
    }

    #[test]
    fn product_ids_are_numbers_or_strings_kept_as_given() {
        let cases: &[(&str, &str, Option<ProductId>)] = &[
            ("a number stays a number", "42", Some(ProductId::Number(42))),
            (
                "the largest u64 is an id",
                "18446744073709551615",
                Some(ProductId::Number(u64::MAX)),
            ),
            (
                "a string stays a string",
                "\"sku-9/blue\"",
                Some(ProductId::Text("sku-9/blue".into())),
            ),
            (
                "a string of digits stays a string",
                "\"42\"",
                Some(ProductId::Text("42".into())),
            ),
            (
                "multi-byte text is an id",
                "\"咖啡-杯\"",
                Some(ProductId::Text("咖啡-杯".into())),
            ),
            ("a negative number is refused", "-1", None),
            ("a fraction is refused", "4.2", None),
            ("a number past u64 is refused", "18446744073709551616", None),
            ("an empty string is refused", "\"\"", None),
            ("a control character is refused", "\"a\\u0000b\"", None),
            (
                "a string past 100 characters is refused",
                &format!("\"{}\"", "é".repeat(101)),
                None,
            ),
            ("null is refused", "null", None),
        ];
        for (rule, json, want) in cases {
            let got = serde_json::from_str::<ProductId>(json).ok();
            assert_eq!(&got, want, "{rule}: {json}");
            if let Some(id) = got {
                assert_eq!(
                    serde_json::to_string(&id).unwrap(),
                    *json,
                    "{rule}: round trip"
                );
            }
        }
        let id = ProductId::Text("a,b:c%dx".into());
        assert_eq!(id.link_form(), "a%2Cb%3Ac%25dx");
        assert_eq!(ProductId::Number(7).link_form(), "7");
    }

    #[test]
    fn source_and_stage_names_are_their_wire_names() {
        for source in [Source::Classic, Source::Block, Source::Hosted, Source::Api] {
            assert_eq!(
                serde_json::to_value(source).unwrap(),
                serde_json::Value::from(source.as_str())
            );
        }
        for stage in [Stage::Cart, Stage::Checkout] {
            assert_eq!(
                serde_json::to_value(stage).unwrap(),
                serde_json::Value::from(stage.as_str())
            );
        }
    }

    #[test]
    fn emails_are_normalised_and_malformed_ones_rejected() {
        assert_eq!(
            Email::parse("email", "  Ann@Example.COM ")
                .unwrap()
                .as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "a..b@example.com",
            "ann@exa mple.com",
            "ann@-x.com",
        ] {
            let err = Email::parse("email", bad).unwrap_err();
            assert_eq!(err.field, "email", "{bad}");
        }
    }

    #[test]
    fn phones_must_be_e164() {
        assert_eq!(
            Phone::parse("phone", "+1 (415) 555-0123").unwrap().as_str(),
            "+14155550123"
        );
        for bad in [
            "4155550123",
            "+0123456789",
            "+12",
            "+1415555012345678",
            "+1415abc0123",
        ] {
            assert!(Phone::parse("phone", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies_are_iso_4217() {
        assert_eq!(Currency::parse("currency", "eur").unwrap().as_str(), "EUR");
        assert!(Currency::parse("currency", "EURO").is_err());
        assert!(Currency::parse("currency", "XYZ").is_err());
    }
}
