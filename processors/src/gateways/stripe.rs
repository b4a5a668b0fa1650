//! Stripe PaymentIntents (issue 11; being written).

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;

use super::{ChargeOutcome, ChargeRequest, Gateway, GatewayState, RefundOutcome, RefundRequest};

/// `[gateways.stripe]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StripeConfig {
    /// `sk_live_…` or `sk_test_…`.
    pub secret_key: SecretString,
    /// Webhook signing secrets (`whsec_…`); more than one while a secret rolls.
    #[serde(default)]
    pub webhook_secrets: Vec<SecretString>,
    /// `https://api.stripe.com` unless set (tests point it at a fake).
    #[serde(default)]
    pub api_base: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

pub struct Stripe {
    config: StripeConfig,
}

impl Stripe {
    pub fn from_config(config: &StripeConfig) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
        })
    }
}

#[async_trait]
impl Gateway for Stripe {
    fn id(&self) -> &'static str {
        "stripe"
    }
    async fn charge(&self, _request: &ChargeRequest) -> ChargeOutcome {
        ChargeOutcome::Unknown {
            charge_ref: None,
            reason: "not written yet".into(),
        }
    }
    async fn retrieve(&self, charge_ref: &str) -> ChargeOutcome {
        ChargeOutcome::Unknown {
            charge_ref: Some(charge_ref.into()),
            reason: "not written yet".into(),
        }
    }
    async fn complete_action(&self, charge_ref: &str, _key: &str) -> ChargeOutcome {
        self.retrieve(charge_ref).await
    }
    async fn refund(&self, _request: &RefundRequest) -> RefundOutcome {
        RefundOutcome::Unknown {
            reason: "not written yet".into(),
        }
    }
    fn state(&self) -> GatewayState {
        GatewayState {
            id: "stripe",
            mode: "test",
            api_base: self
                .config
                .api_base
                .clone()
                .unwrap_or_else(|| "https://api.stripe.com".into()),
            webhooks: !self.config.webhook_secrets.is_empty(),
        }
    }
}
