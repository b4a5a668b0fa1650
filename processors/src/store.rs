//! The store connector: where OCart sends a restored cart, and what it asks the store.
//!
//! Restore hands the cart to the store's checkout in the redirect URL itself (no cookie, any
//! device): `ocart_restore` (the link's token, which the store keeps on the order as
//! `_ocart_restore` for attribution), `ocart_cart` (the cart id, kept as `_ocart_cart_id`),
//! and `ocart_items` (`product[:variation]xquantity`, comma separated). With the WooCommerce
//! connector configured, OCart first asks the store which products are still for sale
//! (`GET /wp-json/wc/v3/products`, basic auth with the REST API key) and leaves out those
//! that are not: a partial restore.

use std::time::Duration;

mod orders;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// `[woocommerce]`: the WooCommerce REST API and webhook secret. The key, the secret and the
/// webhook secret are [`SecretString`]s: `Debug` never shows them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WooConfig {
    /// The store's base URL (`https://shop.example`); set, it enables the connector.
    pub url: Option<String>,
    /// REST API key (`ck_…`) and secret (`cs_…`) with read/write access.
    pub consumer_key: Option<SecretString>,
    pub consumer_secret: Option<SecretString>,
    /// The secret of the store's order webhooks (`X-WC-Webhook-Signature`).
    pub webhook_secret: Option<SecretString>,
    pub timeout_secs: Option<u64>,
    /// Where an order webhook finds the saved payment each gateway writes (order meta keys).
    pub payment_meta: WooPaymentMeta,
}

/// The order meta keys of the saved payment, per gateway (`[woocommerce.payment_meta]`). The
/// WooCommerce Stripe Gateway writes the customer (`cus_…`) and the payment method (`pm_…` /
/// `src_…`) on the order as `_stripe_customer_id` and `_stripe_source_id`. WooCommerce PayPal
/// Payments (gateway ids `ppcp-gateway`, `ppcp-credit-card-gateway`) keeps the PayPal
/// customer as *user* meta `_ppcp_target_customer_id` and the vaulted method as a WooCommerce
/// payment token, neither on the order; the store copies them to the order under these keys
/// (defaults `_ppcp_target_customer_id` and `_ppcp_paypal_vault_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WooPaymentMeta {
    /// The payment method ids (`payment_method`) that are Stripe.
    pub stripe_gateways: Vec<String>,
    pub stripe_customer: String,
    pub stripe_payment_method: String,
    /// The payment method ids that are PayPal.
    pub paypal_gateways: Vec<String>,
    pub paypal_customer: String,
    pub paypal_payment_method: String,
}

impl Default for WooPaymentMeta {
    fn default() -> Self {
        Self {
            stripe_gateways: vec!["stripe".into()],
            stripe_customer: "_stripe_customer_id".into(),
            stripe_payment_method: "_stripe_source_id".into(),
            paypal_gateways: vec!["ppcp-gateway".into(), "ppcp-credit-card-gateway".into()],
            paypal_customer: "_ppcp_target_customer_id".into(),
            paypal_payment_method: "_ppcp_paypal_vault_id".into(),
        }
    }
}

/// A WooCommerce REST API client.
#[derive(Clone)]
pub struct WooCommerce {
    client: reqwest::Client,
    base: String,
    key: SecretString,
    secret: SecretString,
}

#[derive(Deserialize)]
struct Product {
    id: u64,
    #[serde(default = "yes")]
    purchasable: bool,
    #[serde(default)]
    stock_status: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

fn yes() -> bool {
    true
}

impl WooCommerce {
    /// The connector, if `[woocommerce] url` is set (then the key and secret must be too).
    pub fn from_config(config: &WooConfig) -> anyhow::Result<Option<Self>> {
        let Some(url) = config.url.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            anyhow::bail!("woocommerce.url must be an http(s) URL, not {url:?}");
        }
        let (Some(key), Some(secret)) = (&config.consumer_key, &config.consumer_secret) else {
            anyhow::bail!("woocommerce.url is set: woocommerce.consumer_key and consumer_secret are needed too");
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.unwrap_or(10)))
            .user_agent(concat!("OCart/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Self {
            client,
            base: url.to_owned(),
            key: key.clone(),
            secret: secret.clone(),
        }))
    }

    /// A REST API v3 request to `path` (under `/wp-json/wc/v3/`), authenticated.
    fn rest(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}/wp-json/wc/v3/{path}", self.base))
            .basic_auth(self.key.expose_secret(), Some(self.secret.expose_secret()))
    }

    /// The store's checkout page.
    pub fn checkout_url(&self) -> String {
        format!("{}/checkout/", self.base)
    }

    /// Of `product_ids`, those the store no longer sells: unknown, unpublished, out of stock
    /// or not purchasable.
    pub async fn unavailable(&self, product_ids: &[u64]) -> anyhow::Result<Vec<u64>> {
        if product_ids.is_empty() {
            return Ok(Vec::new());
        }
        let include = product_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let response = self
            .rest(reqwest::Method::GET, "products")
            .query(&[
                ("include", include.as_str()),
                ("per_page", "100"),
                ("status", "any"),
            ])
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("WooCommerce answered {status} to the product lookup");
        }
        let products: Vec<Product> = response.json().await?;
        Ok(product_ids
            .iter()
            .copied()
            .filter(|id| {
                !products.iter().any(|p| {
                    p.id == *id
                        && p.purchasable
                        && p.stock_status.as_deref() != Some("outofstock")
                        && p.status.as_deref().is_none_or(|s| s == "publish")
                })
            })
            .collect())
    }
}

/// A recovery coupon to create in the store.
pub struct NewCoupon<'a> {
    pub code: &'a str,
    /// `fixed_cart` or `percent`.
    pub kind: &'a str,
    /// The amount as WooCommerce takes it: a decimal string in the store's currency, or the
    /// percentage.
    pub amount: String,
    /// Restricted to this email (the captured one).
    pub email: Option<&'a str>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub cart_id: &'a str,
}

#[derive(Deserialize)]
struct CreatedCoupon {
    id: u64,
}

#[derive(Deserialize)]
struct WcError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl WooCommerce {
    /// Creates a single-use, individual-use coupon restricted to the shopper's email; answers
    /// its id. A coupon with the same code already there (a send resumed after a crash) is
    /// looked up and answered instead.
    pub async fn create_coupon(&self, coupon: &NewCoupon<'_>) -> anyhow::Result<u64> {
        let body = serde_json::json!({
            "code": coupon.code,
            "discount_type": coupon.kind,
            "amount": coupon.amount,
            "individual_use": true,
            "usage_limit": 1,
            "usage_limit_per_user": 1,
            "email_restrictions": coupon.email.map(|e| vec![e]).unwrap_or_default(),
            "date_expires_gmt": coupon.expires_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
            "description": format!("OCart recovery coupon for cart {}", coupon.cart_id),
            "meta_data": [{"key": "_ocart_cart_id", "value": coupon.cart_id}],
        });
        let response = self
            .rest(reqwest::Method::POST, "coupons")
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.json::<CreatedCoupon>().await?.id);
        }
        let error: WcError = response.json().await.unwrap_or(WcError {
            code: String::new(),
            message: String::new(),
        });
        if error.code == "woocommerce_rest_coupon_code_already_exists" {
            return self.find_coupon(coupon.code).await;
        }
        anyhow::bail!(
            "WooCommerce refused the coupon ({status}): {} {}",
            error.code,
            error.message
        )
    }

    async fn find_coupon(&self, code: &str) -> anyhow::Result<u64> {
        let response = self
            .rest(reqwest::Method::GET, "coupons")
            .query(&[("code", code)])
            .send()
            .await?;
        if !response.status().is_success() {
            anyhow::bail!(
                "WooCommerce answered {} to the coupon lookup",
                response.status()
            );
        }
        let found: Vec<CreatedCoupon> = response.json().await?;
        found
            .first()
            .map(|c| c.id)
            .ok_or_else(|| anyhow::anyhow!("WooCommerce has coupon {code} and does not show it"))
    }

    /// Deletes a coupon for good (`force=true`); one already gone is fine.
    pub async fn delete_coupon(&self, id: u64) -> anyhow::Result<()> {
        let response = self
            .rest(reqwest::Method::DELETE, &format!("coupons/{id}"))
            .query(&[("force", "true")])
            .send()
            .await?;
        let status = response.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            Ok(())
        } else {
            anyhow::bail!("WooCommerce answered {status} to deleting coupon {id}")
        }
    }
}
