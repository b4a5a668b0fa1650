//! The `GatewaySecrets` aggregate (id = the purpose): the rotations of one kind of secret —
//! the WooCommerce order webhooks' secret, Stripe's webhook signing secret, the one-click
//! upsell token signing key. ADR 0016.
//!
//! The log records that a rotation happened, its version and until when the earlier versions
//! stay accepted; never the secret itself, which lives sealed in the operational table
//! `gateway_secrets`. The aggregate is what numbers the versions: two rotations at once get two
//! versions, in the log's order.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::FieldError;

/// What a secret is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretPurpose {
    /// `X-WC-Webhook-Signature` of the store's order webhooks.
    WoocommerceWebhook,
    /// `Stripe-Signature` of Stripe's webhooks.
    StripeWebhook,
    /// The HMAC key of one-click upsell tokens.
    UpsellToken,
}

impl SecretPurpose {
    pub const ALL: [SecretPurpose; 3] = [
        SecretPurpose::WoocommerceWebhook,
        SecretPurpose::StripeWebhook,
        SecretPurpose::UpsellToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::WoocommerceWebhook => "woocommerce-webhook",
            Self::StripeWebhook => "stripe-webhook",
            Self::UpsellToken => "upsell-token",
        }
    }

    pub fn parse(field: &str, raw: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == raw)
            .ok_or_else(|| {
                FieldError::new(
                    field,
                    "must be woocommerce-webhook, stripe-webhook or upsell-token",
                )
            })
    }
}

/// The longest overlap a rotation may keep the earlier secrets accepted for.
pub fn max_overlap() -> Duration {
    Duration::days(30)
}

#[derive(Debug, Clone, PartialEq)]
pub enum GatewaySecretCommand {
    /// A new version; every earlier one stays accepted for `overlap` from `at`.
    Rotate {
        purpose: SecretPurpose,
        overlap: Duration,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum GatewaySecretEvent {
    /// Version `version` of `purpose` is in force from `at`; the earlier versions (the config
    /// file's included, version 0) are refused from `previous_retire_at` on. Never the secret.
    #[serde(rename = "gateway/secret_rotated")]
    Rotated {
        purpose: SecretPurpose,
        version: u32,
        previous_retire_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for GatewaySecretEvent {
    fn event_type(&self) -> String {
        "gateway/secret_rotated".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewaySecretError {
    #[error("the overlap must be between 0 seconds and 30 days")]
    OverlapOutOfRange,
    #[error("the aggregate id must be the purpose ({0})")]
    WrongAggregate(&'static str),
    #[error("too many rotations")]
    TooManyVersions,
}

/// The latest version of one purpose (0: only the config file's secret so far).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewaySecrets {
    purpose: Option<SecretPurpose>,
    version: u32,
}

impl GatewaySecrets {
    pub fn version(&self) -> u32 {
        self.version
    }
}

/// Until when the earlier versions stay accepted after a rotation at `at`, or why not.
pub fn retire_time(
    at: DateTime<Utc>,
    overlap: Duration,
) -> Result<DateTime<Utc>, GatewaySecretError> {
    if overlap < Duration::zero() || overlap > max_overlap() {
        return Err(GatewaySecretError::OverlapOutOfRange);
    }
    at.checked_add_signed(overlap)
        .ok_or(GatewaySecretError::OverlapOutOfRange)
}

impl Aggregate for GatewaySecrets {
    const TYPE: &'static str = "gateway_secret";
    type Command = GatewaySecretCommand;
    type Event = GatewaySecretEvent;
    type Error = GatewaySecretError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let GatewaySecretCommand::Rotate {
            purpose,
            overlap,
            at,
        } = command;
        if self.purpose.is_some_and(|p| p != purpose) {
            return Err(GatewaySecretError::WrongAggregate(purpose.as_str()));
        }
        let previous_retire_at = retire_time(at, overlap)?;
        let version = self
            .version
            .checked_add(1)
            .ok_or(GatewaySecretError::TooManyVersions)?;
        sink.write(
            GatewaySecretEvent::Rotated {
                purpose,
                version,
                previous_retire_at,
                at,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let GatewaySecretEvent::Rotated {
            purpose, version, ..
        } = event;
        self.purpose = Some(purpose);
        self.version = version;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn rotate(overlap: Duration) -> GatewaySecretCommand {
        GatewaySecretCommand::Rotate {
            purpose: SecretPurpose::StripeWebhook,
            overlap,
            at: at(),
        }
    }

    #[test]
    fn each_rotation_is_the_next_version_and_names_when_the_earlier_ones_retire() {
        TestFramework::<GatewaySecrets>::with(())
            .given_no_previous_events()
            .when(rotate(Duration::hours(24)))
            .then_expect_events(vec![GatewaySecretEvent::Rotated {
                purpose: SecretPurpose::StripeWebhook,
                version: 1,
                previous_retire_at: at() + Duration::hours(24),
                at: at(),
            }]);
        TestFramework::<GatewaySecrets>::with(())
            .given(vec![GatewaySecretEvent::Rotated {
                purpose: SecretPurpose::StripeWebhook,
                version: 1,
                previous_retire_at: at(),
                at: at(),
            }])
            .when(rotate(Duration::zero()))
            .then_expect_events(vec![GatewaySecretEvent::Rotated {
                purpose: SecretPurpose::StripeWebhook,
                version: 2,
                previous_retire_at: at(),
                at: at(),
            }]);
    }

    #[test]
    fn overlaps_outside_zero_to_thirty_days_are_refused() {
        let cases = [
            ("negative", Duration::seconds(-1), false),
            ("zero", Duration::zero(), true),
            ("thirty days", Duration::days(30), true),
            (
                "past thirty days",
                Duration::days(30) + Duration::seconds(1),
                false,
            ),
        ];
        for (name, overlap, ok) in cases {
            assert_eq!(retire_time(at(), overlap).is_ok(), ok, "{name}");
        }
        TestFramework::<GatewaySecrets>::with(())
            .given_no_previous_events()
            .when(rotate(Duration::days(31)))
            .then_expect_error(GatewaySecretError::OverlapOutOfRange);
    }

    #[test]
    fn purposes_read_back_as_written() {
        for p in SecretPurpose::ALL {
            assert_eq!(SecretPurpose::parse("purpose", p.as_str()), Ok(p));
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(p.as_str())
            );
        }
        assert!(SecretPurpose::parse("purpose", "paypal").is_err());
    }
}
