//! The `Settings` aggregate (one per installation, id [`SETTINGS_ID`](crate::settings::SETTINGS_ID)) with the groups, keys
//! and defaults of OCart's settings reference, and the range rules a change must pass.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::FieldError;

pub const SETTINGS_ID: &str = "settings";

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
    /// The range and enumeration rules of every key.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut e = Vec::new();
        check_one_of(
            &mut e,
            "general.log_level",
            &self.general.log_level,
            &["debug", "info", "warning", "error"],
        );
        for (i, origin) in self.general.allowed_origins.iter().enumerate() {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin.len() <= 253
                && !origin[origin.find("//").map_or(0, |p| p + 2)..].contains('/');
            if !ok {
                e.push(FieldError::new(
                    format!("general.allowed_origins[{i}]"),
                    "must be an origin such as https://shop.example.com (scheme and host, no path)",
                ));
            }
        }
        let r = &self.recovery;
        check_range(
            &mut e,
            "recovery.capture_email_debounce_ms",
            r.capture_email_debounce_ms.into(),
            0.0,
            10_000.0,
        );
        check_range(
            &mut e,
            "recovery.abandoned_threshold_min",
            r.abandoned_threshold_min.into(),
            5.0,
            1440.0,
        );
        check_range(
            &mut e,
            "recovery.abandonment_scan_interval_min",
            r.abandonment_scan_interval_min.into(),
            1.0,
            60.0,
        );
        check_range(
            &mut e,
            "recovery.cart_retention_days",
            r.cart_retention_days.into(),
            1.0,
            3650.0,
        );
        check_range(
            &mut e,
            "recovery.test_assignment_days",
            r.test_assignment_days.into(),
            1.0,
            3650.0,
        );
        check_range(
            &mut e,
            "recovery.deliverability_days",
            r.deliverability_days.into(),
            1.0,
            3650.0,
        );
        check_range(
            &mut e,
            "recovery.max_age_days",
            r.max_age_days.into(),
            1.0,
            90.0,
        );
        check_range(
            &mut e,
            "recovery.quiet_period_hours",
            r.quiet_period_hours.into(),
            0.0,
            720.0,
        );
        check_range(
            &mut e,
            "recovery.order_lookback_days",
            r.order_lookback_days.into(),
            1.0,
            365.0,
        );
        check_range(
            &mut e,
            "recovery.restore_link_days",
            r.restore_link_days.into(),
            1.0,
            90.0,
        );
        let coupon_kind = match r.coupon_type.as_str() {
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
                amount: r.coupon_amount,
                expiry_days: r.coupon_expiry_days,
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
        for (i, gateway) in r.offline_gateways.iter().enumerate() {
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
        let u = &self.upsells;
        check_range(
            &mut e,
            "upsells.one_click_token_ttl_min",
            u.one_click_token_ttl_min.into(),
            1.0,
            1440.0,
        );
        check_one_of(
            &mut e,
            "upsells.order_strategy_default",
            &u.order_strategy_default,
            &["A", "B"],
        );
        check_range(
            &mut e,
            "upsells.merge_cutoff_min",
            u.merge_cutoff_min.into(),
            0.0,
            1440.0,
        );
        let t = &self.tests;
        check_one_of(
            &mut e,
            "tests.method_default",
            &t.method_default,
            &["frequentist", "bayesian", "bandit"],
        );
        check_range(&mut e, "tests.mde_relative", t.mde_relative, 0.001, 10.0);
        check_range(&mut e, "tests.power_target", t.power_target, 0.5, 0.999);
        check_range(&mut e, "tests.significance", t.significance, 0.5, 0.999);
        check_range(&mut e, "tests.srm_threshold", t.srm_threshold, 0.0001, 0.5);
        if e.is_empty() {
            Ok(())
        } else {
            Err(e)
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
    const TYPE: &'static str = "settings";
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
