//! Upsell store orders over the WooCommerce REST API v3: the child order of an accepted
//! upsell (strategy `A`), the line merged into its parent (strategy `B`), and the refund noted
//! on the order the charge went to.
//!
//! Every write is looked up before it is made, so a write repeated after a crash (or after a
//! timeout that hid a success) finds the first one instead of making a second:
//! - a child order carries the meta `_ocart_acceptance_id`; `GET orders?parent=` finds it;
//! - a merged parent carries the meta `_ocart_acceptance_id_{acceptance}`; `GET orders/{id}`
//!   shows it;
//! - a refund carries the meta `_ocart_refund_id`; `GET orders/{id}/refunds` shows it.
//!
//! Refunds are noted with `api_refund: false`: the money already moved at the gateway, and
//! WooCommerce must not ask its own gateway for a second refund.

use serde::Deserialize;
use serde_json::{json, Value};

use super::WooCommerce;
use crate::upsell::StoreLine;

/// The child order's meta key naming its acceptance.
pub const ACCEPTANCE_META: &str = "_ocart_acceptance_id";
/// A refund's meta key naming OCart's refund id.
pub const REFUND_META: &str = "_ocart_refund_id";

#[derive(Deserialize)]
struct WcMeta {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize)]
struct WcOrder {
    id: u64,
    #[serde(default)]
    meta_data: Vec<WcMeta>,
}

impl WcOrder {
    fn has_meta(&self, key: &str, value: &str) -> bool {
        self.meta_data
            .iter()
            .any(|m| m.key == key && m.value.as_str() == Some(value))
    }
}

/// The meta key a merged parent carries for one acceptance.
pub fn merged_meta_key(acceptance_id: &str) -> String {
    format!("{ACCEPTANCE_META}_{acceptance_id}")
}

impl WooCommerce {
    /// Answers `Err` with WooCommerce's status and error text unless `response` succeeded.
    async fn ok_json<T: serde::de::DeserializeOwned>(
        response: reqwest::Response,
        what: &str,
    ) -> anyhow::Result<T> {
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(300).collect();
            anyhow::bail!("WooCommerce answered {status} to {what}: {body}");
        }
        response
            .json::<T>()
            .await
            .map_err(|e| anyhow::anyhow!("WooCommerce's answer to {what} cannot be read: {e}"))
    }

    /// The child order of `parent` that carries `acceptance_id`, if there is one.
    pub async fn find_child_order(
        &self,
        parent: u64,
        acceptance_id: &str,
    ) -> anyhow::Result<Option<u64>> {
        let mut page = 1u32;
        loop {
            let response = self
                .rest(reqwest::Method::GET, "orders")
                .query(&[
                    ("parent", parent.to_string()),
                    ("per_page", "100".into()),
                    ("page", page.to_string()),
                    ("status", "any".into()),
                ])
                .send()
                .await?;
            let orders: Vec<WcOrder> = Self::ok_json(response, "the child order lookup").await?;
            if let Some(found) = orders
                .iter()
                .find(|o| o.has_meta(ACCEPTANCE_META, acceptance_id))
            {
                return Ok(Some(found.id));
            }
            // A parent has a handful of children; ten pages is far more than any funnel has.
            if orders.len() < 100 || page >= 10 {
                return Ok(None);
            }
            page += 1;
        }
    }

    /// Strategy `A`: the child order of the line's acceptance — the one already there, or a
    /// new one (`processing`, paid, with the charge as its transaction). Answers its id.
    pub async fn write_child_order(&self, line: &StoreLine) -> anyhow::Result<u64> {
        if let Some(found) = self
            .find_child_order(line.parent, &line.acceptance_id)
            .await?
        {
            return Ok(found);
        }
        let body = json!({
            "parent_id": line.parent,
            "status": "processing",
            "set_paid": true,
            "currency": line.currency,
            "payment_method": line.gateway,
            "payment_method_title": line.gateway,
            "transaction_id": line.charge_ref,
            "line_items": [line_item(line)],
            "meta_data": [{"key": ACCEPTANCE_META, "value": line.acceptance_id}],
        });
        let response = self
            .rest(reqwest::Method::POST, "orders")
            .json(&body)
            .send()
            .await?;
        let created: WcOrder = Self::ok_json(response, "the child order").await?;
        Ok(created.id)
    }

    /// Strategy `B`: adds the line to its parent order, once (the parent's meta
    /// `_ocart_acceptance_id_{acceptance}` says it was added). Answers the parent's id.
    pub async fn merge_into_parent(&self, line: &StoreLine) -> anyhow::Result<u64> {
        let path = format!("orders/{}", line.parent);
        let response = self.rest(reqwest::Method::GET, &path).send().await?;
        let parent: WcOrder = Self::ok_json(response, "the parent order lookup").await?;
        let key = merged_meta_key(&line.acceptance_id);
        if parent.meta_data.iter().any(|m| m.key == key) {
            return Ok(parent.id);
        }
        // WooCommerce adds the line items of an update without an `id` to the order's lines.
        let body = json!({
            "line_items": [line_item(line)],
            "meta_data": [{"key": key, "value": line.charge_ref}],
        });
        let response = self
            .rest(reqwest::Method::PUT, &path)
            .json(&body)
            .send()
            .await?;
        let updated: WcOrder = Self::ok_json(response, "the parent order update").await?;
        Ok(updated.id)
    }

    /// Notes a refund made at the gateway on `order` (no second refund: `api_refund: false`),
    /// once per `refund_id`. Answers the store's refund id.
    pub async fn note_refund(
        &self,
        order: u64,
        refund_id: &str,
        amount: &str,
        reason: Option<&str>,
    ) -> anyhow::Result<u64> {
        let path = format!("orders/{order}/refunds");
        let response = self
            .rest(reqwest::Method::GET, &path)
            .query(&[("per_page", "100")])
            .send()
            .await?;
        let refunds: Vec<WcOrder> = Self::ok_json(response, "the refund lookup").await?;
        if let Some(found) = refunds.iter().find(|r| r.has_meta(REFUND_META, refund_id)) {
            return Ok(found.id);
        }
        let body = json!({
            "amount": amount,
            "reason": reason.unwrap_or("Upsell refunded by OCart"),
            "api_refund": false,
            "api_restock": false,
            "meta_data": [{"key": REFUND_META, "value": refund_id}],
        });
        let response = self
            .rest(reqwest::Method::POST, &path)
            .json(&body)
            .send()
            .await?;
        let created: WcOrder = Self::ok_json(response, "the refund").await?;
        Ok(created.id)
    }
}

/// The offer's line as WooCommerce takes it: the product, the quantity, the total as a decimal
/// string (the price the shopper accepted, not the catalogue's).
fn line_item(line: &StoreLine) -> Value {
    json!({
        "product_id": line.product_id,
        "quantity": line.quantity,
        "subtotal": line.total,
        "total": line.total,
        "meta_data": [{"key": ACCEPTANCE_META, "value": line.acceptance_id}],
    })
}
