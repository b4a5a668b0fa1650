//! Typed, layered configuration: defaults → TOML file → `OCART_*` environment / flags.
//! Secrets are wrapped so they never print.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// A value that never shows in logs or `Debug` output: the one secret type of the workspace
/// (the SMTP password, the SMS auth token, webhook secrets, WooCommerce keys, the DKIM key and
/// the server secret are all one), read with [`secrecy::ExposeSecret::expose_secret`] only
/// where it is used.
pub use secrecy::SecretString as Secret;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Checkout captures per client IP per window (`public_requests` is its former name).
    #[serde(alias = "public_requests")]
    pub capture_requests: u32,
    /// Restore-link clicks (`/r/…`), and requests on unknown unsubscribe tokens, per client IP
    /// per window.
    pub restore_requests: u32,
    /// Open-pixel loads (`/o/…`) per client IP per window.
    pub pixel_requests: u32,
    /// Requests per unsubscribe link (`/u/…`) per window. Unsubscribes are never limited by
    /// IP: mailbox providers send one-click unsubscribes from shared addresses.
    pub unsubscribe_per_token: u32,
    /// Order bump requests (`/bumps/eligible`, `/bumps/{id}/accept`, `/bumps/{id}/decline`)
    /// per client IP per window.
    pub bump_requests: u32,
    pub window_secs: u64,
    /// Keys a limiter tracks before it drops those whose budget is whole again.
    pub max_tracked: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            capture_requests: 30,
            restore_requests: 60,
            pixel_requests: 600,
            unsubscribe_per_token: 10,
            bump_requests: 120,
            window_secs: 600,
            max_tracked: 100_000,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// How long a read waits for its projection to pass the client's last write.
    pub read_your_writes_timeout_ms: u64,
    pub request_timeout_secs: u64,
    /// Origins whose pages may call the shopper routes (capture, funnel resolve, bumps) from
    /// the browser. Unset: the WooCommerce store's origin if `[woocommerce] url` is set, else
    /// none. The `general.allowed_origins` setting adds to these.
    pub cors_origins: Option<Vec<String>>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            read_your_writes_timeout_ms: 2000,
            request_timeout_secs: 30,
            cors_origins: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorsConfig {
    /// Fallback poll when no wake-up arrives (other processes' writes on SQLite).
    pub poll_interval_ms: u64,
    pub batch_size: i64,
    /// Run projectors, the relay and the sweeper in this process (when the lease is free).
    pub enabled: bool,
    /// How often the A/B conclusion looks at the running tests (SRM alert, conclusion).
    pub conclude_interval_ms: u64,
}

impl Default for ProcessorsConfig {
    fn default() -> Self {
        Self {
            poll_interval_ms: 1000,
            batch_size: 500,
            enabled: true,
            conclude_interval_ms: 5_000,
        }
    }
}

/// Everything `ocart` can be configured with. Its `Debug` redacts the passwords and tokens
/// that connection URLs may carry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub nats_url: Option<String>,
    pub bind: SocketAddr,
    /// Server secret for subject hashes; generated and stored in the database if unset.
    pub secret: Option<Secret>,
    pub rate_limit: RateLimitConfig,
    pub http: HttpConfig,
    pub processors: ProcessorsConfig,
    /// Recovery process settings: store name, public URL for links, claim timeout, outbox.
    pub recovery: ocart_processors::recovery::RecoveryConfig,
    /// How recovery emails leave: the outbox folder (default) or SMTP, From, DKIM.
    pub email: ocart_processors::recovery::channels::EmailConfig,
    /// How recovery SMS leave: the outbox log (default) or a Twilio-compatible API.
    pub sms: ocart_processors::recovery::channels::SmsConfig,
    /// The WooCommerce connector: REST API (product availability, coupons) and the order
    /// webhooks' secret.
    pub woocommerce: ocart_processors::store::WooConfig,
    /// Payment gateways for one-click upsells: the sandbox (on by default), Stripe, PayPal.
    pub gateways: ocart_processors::gateways::GatewaysConfig,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |url: &Option<String>| url.as_deref().map(ocart_projections::redact);
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("database_url", &redact(&self.database_url))
            .field("nats_url", &redact(&self.nats_url))
            .field("bind", &self.bind)
            .field("secret", &self.secret)
            .field("rate_limit", &self.rate_limit)
            .field("http", &self.http)
            .field("processors", &self.processors)
            .field("recovery", &self.recovery)
            .field("email", &self.email)
            .field("sms", &self.sms)
            .field("woocommerce", &self.woocommerce)
            .field("gateways", &self.gateways)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("."),
            database_url: None,
            nats_url: None,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            secret: None,
            rate_limit: RateLimitConfig::default(),
            http: HttpConfig::default(),
            processors: ProcessorsConfig::default(),
            recovery: Default::default(),
            email: Default::default(),
            sms: Default::default(),
            woocommerce: Default::default(),
            gateways: Default::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing the config file {}", path.display()))
    }

    /// The database URL in force (`ocart.db` in the data dir by default).
    pub fn effective_database_url(&self) -> String {
        ocart_projections::database_url(self.database_url.as_deref(), &self.data_dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_file_parses_with_every_section() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ocart.example.toml");
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.email.transport, "outbox");
        assert_eq!(config.email.smtp.port, 587);
        assert_eq!(config.recovery.claim_timeout_secs, 600);
        assert_eq!(config.sms.transport, "outbox");
        assert_eq!(config.rate_limit.capture_requests, 30);
        assert_eq!(config.rate_limit.unsubscribe_per_token, 10);
        assert!(config.woocommerce.url.is_none());
        assert_eq!(
            config.recovery.checkout_url.as_deref(),
            Some("https://shop.example.com/checkout/")
        );
    }

    #[test]
    fn the_former_public_requests_key_still_sets_the_capture_limit() {
        let config: Config = toml::from_str("[rate_limit]\npublic_requests = 7\n").unwrap();
        assert_eq!(config.rate_limit.capture_requests, 7);
        assert_eq!(config.rate_limit.restore_requests, 60);
    }
}
