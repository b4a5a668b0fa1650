//! The `Settings` aggregate (one per installation, id [`SETTINGS_ID`](crate::settings::SETTINGS_ID)) with the groups, keys
//! and defaults of OCart's settings reference, and the range rules a change must pass.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::FieldError;

pub const SETTINGS_ID: &str = "settings";
/// The settings aggregate's type in the log.
pub const SETTINGS_TYPE: &str = "settings";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Master kill-switch.
    pub enabled: bool,
    pub replace_woo_checkout: bool,
    /// debug / info / warning / error
    pub log_level: String,
    /// Store origins allowed to call the public capture endpoint from the browser (CORS).
    pub allowed_origins: Vec<String>,
}

impl Default for General {
    fn default() -> Self {
        Self {
            enabled: true,
            replace_woo_checkout: false,
            log_level: "warning".into(),
            allowed_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Recovery {
    pub capture_email_debounce_ms: u32,
    /// Require explicit consent before a cart is captured and messaged.
    pub consent_required: bool,
    /// Minutes of inactivity before an active cart is abandoned (5–1440).
    pub abandoned_threshold_min: u32,
    /// Minutes between fallback abandonment scans (1–60).
    pub abandonment_scan_interval_min: u32,
    pub cart_retention_days: u32,
    pub test_assignment_days: u32,
    pub deliverability_days: u32,
    /// Master switch of recovery outreach: off still captures and marks abandoned carts, but
    /// opens no runs (CartBay's "Enable recovery emails").
    pub enabled: bool,
    /// A run whose cart was abandoned longer ago than this is stopped, not mailed (1–90).
    pub max_age_days: u32,
    /// No run messages a recipient another run messaged within this many hours (0–720), so a
    /// shopper with three carts gets one sequence.
    pub quiet_period_hours: u32,
    /// How far back an order by the same email counts as "already bought" (1–365 days).
    pub order_lookback_days: u32,
    /// Gateways whose on-hold or pending orders count as paid (bank transfer, cash on delivery).
    pub offline_gateways: Vec<String>,
    /// How long a restore link in a recovery message works (1–90 days).
    pub restore_link_days: u32,
    /// Recovery coupons on coupon steps without their own discount (CartBay's Offers):
    /// `fixed_cart` or `percent`.
    pub coupon_type: String,
    /// Minor units of the cart's currency (fixed_cart) or a percentage (percent).
    pub coupon_amount: i64,
    /// Days a coupon stays valid after it is issued (1–365).
    pub coupon_expiry_days: u32,
    /// Test mode: `POST /recovery/test/trigger` makes a dummy cart mailed within 30 seconds.
    pub test_mode: bool,
}

impl Recovery {
    /// The discount of a coupon step that names none of its own.
    pub fn default_discount(&self) -> crate::recovery::Discount {
        crate::recovery::Discount {
            kind: if self.coupon_type == "percent" {
                crate::recovery::CouponKind::Percent
            } else {
                crate::recovery::CouponKind::FixedCart
            },
            amount: self.coupon_amount,
            expiry_days: self.coupon_expiry_days,
        }
    }

    /// `coupon_type`, `coupon_amount` and `coupon_expiry_days`, as one discount.
    fn check_coupon(&self, e: &mut Vec<FieldError>) {
        let coupon_kind = match self.coupon_type.as_str() {
            "fixed_cart" => Some(crate::recovery::CouponKind::FixedCart),
            "percent" => Some(crate::recovery::CouponKind::Percent),
            _ => {
                e.push(FieldError::new(
                    "recovery.coupon_type",
                    "must be fixed_cart or percent",
                ));
                None
            }
        };
        if let Some(kind) = coupon_kind {
            let discount = crate::recovery::Discount {
                kind,
                amount: self.coupon_amount,
                expiry_days: self.coupon_expiry_days,
            };
            for problem in discount.check() {
                let field = if problem.contains("expire") {
                    "recovery.coupon_expiry_days"
                } else {
                    "recovery.coupon_amount"
                };
                e.push(FieldError::new(field, problem));
            }
        }
    }

    fn check_gateways(&self, e: &mut Vec<FieldError>) {
        for (i, gateway) in self.offline_gateways.iter().enumerate() {
            let ok = !gateway.is_empty()
                && gateway.len() <= 64
                && gateway
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                e.push(FieldError::new(
                    format!("recovery.offline_gateways[{i}]"),
                    "must be a payment gateway id such as bacs or cod",
                ));
            }
        }
    }
}

impl Default for Recovery {
    fn default() -> Self {
        Self {
            capture_email_debounce_ms: 800,
            consent_required: true,
            abandoned_threshold_min: 30,
            abandonment_scan_interval_min: 5,
            cart_retention_days: 90,
            test_assignment_days: 365,
            deliverability_days: 180,
            enabled: true,
            max_age_days: 7,
            quiet_period_hours: 24,
            order_lookback_days: 30,
            offline_gateways: vec!["bacs".into(), "cheque".into(), "cod".into()],
            restore_link_days: 30,
            coupon_type: "fixed_cart".into(),
            coupon_amount: 1000,
            coupon_expiry_days: 7,
            test_mode: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upsells {
    pub one_click_token_ttl_min: u32,
    /// A = child order, B = merge (with fallback)
    pub order_strategy_default: String,
    pub merge_cutoff_min: u32,
    pub sca_modal_enabled: bool,
}

impl Default for Upsells {
    fn default() -> Self {
        Self {
            one_click_token_ttl_min: 30,
            order_strategy_default: "A".into(),
            merge_cutoff_min: 5,
            sca_modal_enabled: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tests {
    /// frequentist / bayesian / bandit
    pub method_default: String,
    pub mde_relative: f64,
    pub power_target: f64,
    pub significance: f64,
    pub srm_threshold: f64,
}

impl Default for Tests {
    fn default() -> Self {
        Self {
            method_default: "bayesian".into(),
            mde_relative: 0.10,
            power_target: 0.80,
            significance: 0.95,
            srm_threshold: 0.02,
        }
    }
}

/// Every setting, grouped as in the reference. `Default` gives the reference defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettingsValues {
    pub general: General,
    pub recovery: Recovery,
    pub upsells: Upsells,
    pub tests: Tests,
}

/// One changed key, `group.key`, with its old and new values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingChange {
    pub key: String,
    pub old: Value,
    pub new: Value,
}

/// What one setting's value must be: the rule [`SettingsValues::validate`] checks, and what a
/// settings document (the API's JSON Schema of a patch) states about the key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// true or false.
    Flag,
    /// An integer from `min` to `max`.
    Integer { min: i64, max: i64 },
    /// A number from `min` to `max`.
    Number { min: f64, max: f64 },
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A list of store origins: each matches [`Rule::ORIGIN_PATTERN`] and is at most
    /// [`Rule::ORIGIN_MAX_LEN`] bytes.
    Origins,
    /// A list of payment gateway ids, each matching [`Rule::GATEWAY_PATTERN`].
    GatewayIds,
    /// `recovery.coupon_type`, checked with the amount and expiry as one
    /// [`Discount`](crate::recovery::Discount): `fixed_cart` or `percent`.
    CouponType,
    /// `recovery.coupon_amount`: at least 1; with `coupon_type` `percent` (in the patch or in
    /// force) at most 100. The second half depends on another key's value, in force or patched.
    CouponAmount,
    /// `recovery.coupon_expiry_days`: 1 to 365.
    CouponExpiryDays,
}

impl Rule {
    /// `scheme://host`, no path: what [`Rule::Origins`] checks, as a regular expression.
    pub const ORIGIN_PATTERN: &'static str = "^https?://[^/]+$";
    pub const ORIGIN_MAX_LEN: usize = 253;
    /// What [`Rule::GatewayIds`] checks, as a regular expression.
    pub const GATEWAY_PATTERN: &'static str = "^[A-Za-z0-9_-]{1,64}$";
    /// The kinds of [`Rule::CouponType`].
    pub const COUPON_TYPES: &'static [&'static str] = &["fixed_cart", "percent"];
    /// The range of [`Rule::CouponAmount`] whatever the coupon type, and of a percentage.
    pub const COUPON_AMOUNT: (i64, i64) = (1, i64::MAX);
    pub const COUPON_PERCENT: (i64, i64) = (1, 100);
    /// The range of [`Rule::CouponExpiryDays`].
    pub const COUPON_EXPIRY_DAYS: (i64, i64) = (1, 365);
}

/// One setting: its group, its key and its rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub group: &'static str,
    pub key: &'static str,
    pub rule: Rule,
}

const fn setting(group: &'static str, key: &'static str, rule: Rule) -> Setting {
    Setting { group, key, rule }
}

const fn int(min: i64, max: i64) -> Rule {
    Rule::Integer { min, max }
}

const fn number(min: f64, max: f64) -> Rule {
    Rule::Number { min, max }
}

/// Every setting, in the order [`SettingsValues::validate`] checks them (which is the order of
/// its errors). The one table of the settings' rules: `validate` reads its ranges and
/// enumerations here, and the API's document of a settings patch is made from it.
pub const SETTINGS: &[Setting] = &[
    setting("general", "enabled", Rule::Flag),
    setting("general", "replace_woo_checkout", Rule::Flag),
    setting(
        "general",
        "log_level",
        Rule::OneOf(&["debug", "info", "warning", "error"]),
    ),
    setting("general", "allowed_origins", Rule::Origins),
    setting("recovery", "capture_email_debounce_ms", int(0, 10_000)),
    setting("recovery", "consent_required", Rule::Flag),
    setting("recovery", "abandoned_threshold_min", int(5, 1440)),
    setting("recovery", "abandonment_scan_interval_min", int(1, 60)),
    setting("recovery", "cart_retention_days", int(1, 3650)),
    setting("recovery", "test_assignment_days", int(1, 3650)),
    setting("recovery", "deliverability_days", int(1, 3650)),
    setting("recovery", "enabled", Rule::Flag),
    setting("recovery", "max_age_days", int(1, 90)),
    setting("recovery", "quiet_period_hours", int(0, 720)),
    setting("recovery", "order_lookback_days", int(1, 365)),
    setting("recovery", "restore_link_days", int(1, 90)),
    setting("recovery", "coupon_type", Rule::CouponType),
    setting("recovery", "coupon_amount", Rule::CouponAmount),
    setting("recovery", "coupon_expiry_days", Rule::CouponExpiryDays),
    setting("recovery", "offline_gateways", Rule::GatewayIds),
    setting("recovery", "test_mode", Rule::Flag),
    setting("upsells", "one_click_token_ttl_min", int(1, 1440)),
    setting(
        "upsells",
        "order_strategy_default",
        Rule::OneOf(&["A", "B"]),
    ),
    setting("upsells", "merge_cutoff_min", int(0, 1440)),
    setting("upsells", "sca_modal_enabled", Rule::Flag),
    setting(
        "tests",
        "method_default",
        Rule::OneOf(&["frequentist", "bayesian", "bandit"]),
    ),
    setting("tests", "mde_relative", number(0.001, 10.0)),
    setting("tests", "power_target", number(0.5, 0.999)),
    setting("tests", "significance", number(0.5, 0.999)),
    setting("tests", "srm_threshold", number(0.0001, 0.5)),
];

/// The settings groups, in the order of [`SETTINGS`].
pub const GROUPS: &[&str] = &["general", "recovery", "upsells", "tests"];

fn check_range(errors: &mut Vec<FieldError>, key: &str, value: f64, min: f64, max: f64) {
    if !(min..=max).contains(&value) {
        errors.push(FieldError::new(
            key,
            format!("must be between {min} and {max}, got {value}"),
        ));
    }
}

fn check_one_of(errors: &mut Vec<FieldError>, key: &str, value: &str, allowed: &[&str]) {
    if !allowed.contains(&value) {
        errors.push(FieldError::new(
            key,
            format!("must be one of {}, got {value:?}", allowed.join(", ")),
        ));
    }
}

impl SettingsValues {
    /// The rules of [`SETTINGS`], every key's.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut e = Vec::new();
        let values = serde_json::to_value(self).unwrap_or_default();
        for setting in SETTINGS {
            let name = format!("{}.{}", setting.group, setting.key);
            let value = &values[setting.group][setting.key];
            match setting.rule {
                Rule::Flag | Rule::CouponAmount | Rule::CouponExpiryDays => {}
                Rule::Integer { min, max } => check_range(
                    &mut e,
                    &name,
                    value.as_f64().unwrap_or(f64::NAN),
                    min as f64,
                    max as f64,
                ),
                Rule::Number { min, max } => {
                    check_range(&mut e, &name, value.as_f64().unwrap_or(f64::NAN), min, max)
                }
                Rule::OneOf(allowed) => {
                    check_one_of(&mut e, &name, value.as_str().unwrap_or_default(), allowed)
                }
                Rule::Origins => self.check_origins(&mut e),
                Rule::CouponType => self.recovery.check_coupon(&mut e),
                Rule::GatewayIds => self.recovery.check_gateways(&mut e),
            }
        }
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
        }
    }

    fn check_origins(&self, e: &mut Vec<FieldError>) {
        for (i, origin) in self.general.allowed_origins.iter().enumerate() {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin.len() <= Rule::ORIGIN_MAX_LEN
                && !origin[origin.find("//").map_or(0, |p| p + 2)..].contains('/');
            if !ok {
                e.push(FieldError::new(
                    format!("general.allowed_origins[{i}]"),
                    "must be an origin such as https://shop.example.com (scheme and host, no path)",
                ));
            }
        }
    }

    /// Applies a partial document (`{"recovery": {"abandoned_threshold_min": 45}}`) and
    /// returns the new values with the list of changed keys, or every field that is wrong.
    pub fn patched(
        &self,
        patch: &Value,
    ) -> Result<(SettingsValues, Vec<SettingChange>), Vec<FieldError>> {
        let Value::Object(groups) = patch else {
            return Err(vec![FieldError::new(
                "",
                "must be a JSON object of setting groups",
            )]);
        };
        let old = serde_json::to_value(self).expect("settings serialise");
        let mut merged = old.clone();
        for (group, keys) in groups {
            let Some(target) = merged.get_mut(group).and_then(Value::as_object_mut) else {
                return Err(vec![FieldError::new(
                    group.clone(),
                    "is not a settings group (general, recovery, upsells, tests)",
                )]);
            };
            let Value::Object(keys) = keys else {
                return Err(vec![FieldError::new(
                    group.clone(),
                    "must be an object of keys",
                )]);
            };
            for (key, value) in keys {
                if !target.contains_key(key) {
                    return Err(vec![FieldError::new(
                        format!("{group}.{key}"),
                        "is not a known setting",
                    )]);
                }
                target.insert(key.clone(), value.clone());
            }
        }
        let values: SettingsValues =
            serde_path_to_error::deserialize(merged.clone()).map_err(|err| {
                vec![FieldError::new(
                    err.path().to_string(),
                    err.inner().to_string(),
                )]
            })?;
        values.validate()?;
        let new = serde_json::to_value(&values).expect("settings serialise");
        let mut changes = Vec::new();
        for (group, keys) in new.as_object().into_iter().flatten() {
            for (key, value) in keys.as_object().into_iter().flatten() {
                let before = &old[group][key];
                if before != value {
                    changes.push(SettingChange {
                        key: format!("{group}.{key}"),
                        old: before.clone(),
                        new: value.clone(),
                    });
                }
            }
        }
        Ok((values, changes))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SettingsCommand {
    Update { patch: Value, at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SettingsEvent {
    #[serde(rename = "settings/changed")]
    Changed {
        changes: Vec<SettingChange>,
        values: SettingsValues,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SettingsEvent {
    fn event_type(&self) -> String {
        "settings/changed".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid settings: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct SettingsError(pub Vec<FieldError>);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    values: SettingsValues,
}

impl Settings {
    pub fn values(&self) -> &SettingsValues {
        &self.values
    }
}

impl Aggregate for Settings {
    const TYPE: &'static str = SETTINGS_TYPE;
    type Command = SettingsCommand;
    type Event = SettingsEvent;
    type Error = SettingsError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let SettingsCommand::Update { patch, at } = command;
        let (values, changes) = self.values.patched(&patch).map_err(SettingsError)?;
        if !changes.is_empty() {
            sink.write(
                SettingsEvent::Changed {
                    changes,
                    values,
                    at,
                },
                self,
            )
            .await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let SettingsEvent::Changed { values, .. } = event;
        self.values = values;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_follow_the_reference() {
        let s = SettingsValues::default();
        assert!(s.general.enabled);
        assert!(s.recovery.consent_required);
        assert_eq!(s.recovery.abandoned_threshold_min, 30);
        assert_eq!(s.recovery.cart_retention_days, 90);
        assert_eq!(s.upsells.one_click_token_ttl_min, 30);
        assert_eq!(s.tests.method_default, "bayesian");
        assert!(s.validate().is_ok());
    }

    #[test]
    fn a_patch_reports_the_changed_keys() {
        let (values, changes) = SettingsValues::default()
            .patched(&json!({"recovery": {"abandoned_threshold_min": 45}}))
            .unwrap();
        assert_eq!(values.recovery.abandoned_threshold_min, 45);
        assert_eq!(
            changes,
            vec![SettingChange {
                key: "recovery.abandoned_threshold_min".into(),
                old: json!(30),
                new: json!(45)
            }]
        );
    }

    #[test]
    fn the_table_names_every_setting_once_with_its_type() {
        let values = serde_json::to_value(SettingsValues::default()).unwrap();
        let mut in_values: Vec<String> = Vec::new();
        for (group, keys) in values.as_object().unwrap() {
            assert!(GROUPS.contains(&group.as_str()), "{group} is in GROUPS");
            for (key, value) in keys.as_object().unwrap() {
                in_values.push(format!("{group}.{key}"));
                let setting = SETTINGS
                    .iter()
                    .find(|s| s.group == group && s.key == key)
                    .unwrap_or_else(|| panic!("{group}.{key} is in SETTINGS"));
                let fits = match setting.rule {
                    Rule::Flag => value.is_boolean(),
                    Rule::Integer { .. } | Rule::CouponAmount | Rule::CouponExpiryDays => {
                        value.is_i64() || value.is_u64()
                    }
                    Rule::Number { .. } => value.is_number(),
                    Rule::OneOf(_) | Rule::CouponType => value.is_string(),
                    Rule::Origins | Rule::GatewayIds => value.is_array(),
                };
                assert!(fits, "{group}.{key}: {value} fits {:?}", setting.rule);
            }
        }
        let mut in_table: Vec<String> = SETTINGS
            .iter()
            .map(|s| format!("{}.{}", s.group, s.key))
            .collect();
        in_values.sort();
        in_table.sort();
        assert_eq!(in_table, in_values, "each setting once, no other");
    }

    /// The table is what `validate` checks: each bound is accepted, one step past it is
    /// refused by name, and so is each value outside an enumeration.
    #[test]
    fn validate_checks_the_ranges_and_enumerations_of_the_table() {
        let base = SettingsValues::default();
        let patch = |group: &str, key: &str, value: Value| json!({ group: { key: value } });
        for setting in SETTINGS {
            let (group, key) = (setting.group, setting.key);
            let name = format!("{group}.{key}");
            let (accepted, refused): (Vec<Value>, Vec<Value>) = match setting.rule {
                Rule::Integer { min, max } => {
                    let mut refused = vec![json!(max + 1)];
                    if min > 0 {
                        refused.push(json!(min - 1));
                    }
                    (vec![json!(min), json!(max)], refused)
                }
                Rule::Number { min, max } => (
                    vec![json!(min), json!(max)],
                    vec![json!(min - min / 10.0), json!(max + 0.001)],
                ),
                Rule::OneOf(allowed) => (
                    allowed.iter().map(|a| json!(a)).collect(),
                    vec![json!("nope"), json!("")],
                ),
                Rule::CouponType => (
                    Rule::COUPON_TYPES.iter().map(|a| json!(a)).collect(),
                    vec![json!("nope")],
                ),
                Rule::CouponAmount => (
                    vec![json!(Rule::COUPON_AMOUNT.0), json!(Rule::COUPON_AMOUNT.1)],
                    vec![json!(Rule::COUPON_AMOUNT.0 - 1)],
                ),
                Rule::CouponExpiryDays => (
                    vec![
                        json!(Rule::COUPON_EXPIRY_DAYS.0),
                        json!(Rule::COUPON_EXPIRY_DAYS.1),
                    ],
                    vec![
                        json!(Rule::COUPON_EXPIRY_DAYS.0 - 1),
                        json!(Rule::COUPON_EXPIRY_DAYS.1 + 1),
                    ],
                ),
                Rule::Flag | Rule::Origins | Rule::GatewayIds => continue,
            };
            for value in accepted {
                let mut patch = patch(group, key, value.clone());
                if setting.rule == Rule::CouponType {
                    // An amount that fits either type (the default's does not fit a percentage).
                    patch["recovery"]["coupon_amount"] = json!(10);
                }
                let got = base.patched(&patch);
                assert!(got.is_ok(), "{name} = {value}: {got:?}");
            }
            for value in refused {
                let err = base
                    .patched(&patch(group, key, value.clone()))
                    .expect_err(&format!("{name} = {value} is refused"));
                assert_eq!(err[0].field, name, "{name} = {value}");
            }
        }
        // A percentage coupon is 1 to 100, whichever request set the type.
        let percent = base
            .patched(&json!({"recovery": {"coupon_type": "percent", "coupon_amount": 10}}))
            .unwrap()
            .0;
        for (amount, ok) in [
            (Rule::COUPON_PERCENT.0, true),
            (Rule::COUPON_PERCENT.1, true),
            (Rule::COUPON_PERCENT.1 + 1, false),
        ] {
            let got = percent.patched(&json!({"recovery": {"coupon_amount": amount}}));
            assert_eq!(got.is_ok(), ok, "percent amount {amount}: {got:?}");
        }
    }

    #[test]
    fn origins_and_gateway_ids_are_checked_as_their_patterns_say() {
        let base = SettingsValues::default();
        let origins = |o: &str| base.patched(&json!({"general": {"allowed_origins": [o]}}));
        for ok in [
            "https://shop.example.com",
            "http://localhost:8080",
            "https://a",
        ] {
            assert!(origins(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://",
            "https://shop.example.com/",
            "https://shop.example.com/path",
            "ftp://shop.example.com",
            "shop.example.com",
        ] {
            assert_eq!(
                origins(bad).unwrap_err()[0].field,
                "general.allowed_origins[0]",
                "{bad}"
            );
        }
        let long = format!("https://{}", "a".repeat(Rule::ORIGIN_MAX_LEN - 8));
        assert!(origins(&long).is_ok(), "{} bytes", long.len());
        assert!(origins(&format!("{long}a")).is_err(), "one byte more");
        let gateways = |g: &str| base.patched(&json!({"recovery": {"offline_gateways": [g]}}));
        for ok in ["bacs", "cod", "my_gate-2", &"g".repeat(64)] {
            assert!(gateways(ok).is_ok(), "{ok}");
        }
        for bad in ["", "pay pal", "é", &"g".repeat(65)] {
            assert!(gateways(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn out_of_range_unknown_and_mistyped_keys_are_rejected_by_name() {
        let base = SettingsValues::default();
        let err = base
            .patched(&json!({"recovery": {"abandoned_threshold_min": 4}}))
            .unwrap_err();
        assert_eq!(err[0].field, "recovery.abandoned_threshold_min");
        let err = base.patched(&json!({"recovery": {"nope": 4}})).unwrap_err();
        assert_eq!(err[0].field, "recovery.nope");
        let err = base
            .patched(&json!({"recovery": {"consent_required": "yes"}}))
            .unwrap_err();
        assert_eq!(err[0].field, "recovery.consent_required");
    }
}
