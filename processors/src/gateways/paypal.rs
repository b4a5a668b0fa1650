//! PayPal Orders v2 (issue 11; being written).

use async_trait::async_trait;
use secrecy::SecretString;
use serde::Deserialize;

use super::{ChargeOutcome, ChargeRequest, Gateway, GatewayState, RefundOutcome, RefundRequest};

/// `[gateways.paypal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayPalConfig {
    pub client_id: SecretString,
    pub client_secret: SecretString,
    /// The webhook's id (for `verify-webhook-signature`).
    #[serde(default)]
    pub webhook_id: Option<String>,
    /// `https://api-m.paypal.com` unless set (tests point it at a fake).
    #[serde(default)]
    pub api_base: Option<String>,
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

pub struct PayPal {
    config: PayPalConfig,
}

impl PayPal {
    pub fn from_config(config: &PayPalConfig) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
        })
    }
}

#[async_trait]
impl Gateway for PayPal {
    fn id(&self) -> &'static str {
        "paypal"
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
            id: "paypal",
            mode: "test",
            api_base: self
                .config
                .api_base
                .clone()
                .unwrap_or_else(|| "https://api-m.paypal.com".into()),
            webhooks: self.config.webhook_id.is_some(),
        }
    }
}
