//! A fake WooCommerce store (REST API behind basic auth) and its signed order webhooks.

use std::sync::Arc;

use ocart_api::Config;
use serde_json::{json, Value};

use crate::app::{read, TestApp};

/// A WooCommerce store at the edge of the world: the REST API parts OCart calls
/// (`GET /wp-json/wc/v3/products`, `POST /wp-json/wc/v3/coupons`, and stateful orders:
/// `GET /orders?parent=`, `GET`/`PUT /orders/{id}`, `POST /orders`, `GET`/`POST
/// /orders/{id}/refunds`) behind basic auth with a consumer key and secret, answering
/// WooCommerce's error shapes, plus a signer for the order webhooks it would deliver.
pub struct FakeWoo {
    pub port: u16,
    pub state: Arc<WooState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
pub struct WooState {
    /// product id → (purchasable, stock_status)
    pub products: std::sync::Mutex<std::collections::HashMap<u64, (bool, String)>>,
    /// Coupons created, as posted.
    pub coupons: std::sync::Mutex<Vec<Value>>,
    /// Every request line seen.
    pub requests: std::sync::Mutex<Vec<String>>,
    /// Orders by id, as posted or seeded (with `id`, `parent_id`, `line_items`, `meta_data`,
    /// `transaction_id`, …).
    pub orders: std::sync::Mutex<std::collections::BTreeMap<u64, Value>>,
    /// Refunds by order id, as posted (with `id`, `api_refund`, `meta_data`).
    pub refunds: std::sync::Mutex<std::collections::HashMap<u64, Vec<Value>>>,
    /// Order writes (`POST /orders`, `PUT /orders/{id}`) still to answer 500.
    pub fail_order_writes: std::sync::atomic::AtomicU32,
    /// Orders created by `POST /orders`.
    pub orders_created: std::sync::atomic::AtomicUsize,
    /// While armed, `POST /orders` creates the order and then holds its answer unsent
    /// ([`FakeWoo::hold_after_order_create`]).
    pub hold_order_creates: crate::stripe::Hold,
}

pub const WOO_KEY: &str = "ck_test";
pub const WOO_SECRET: &str = "cs_test";
pub const WOO_WEBHOOK_SECRET: &str = "whsec-test";

impl FakeWoo {
    pub async fn start() -> Self {
        use axum::extract::{Query, State};
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::get;
        use axum::Json;
        type Reply = (StatusCode, Json<Value>);
        fn authorised(headers: &HeaderMap) -> Result<(), Reply> {
            use base64::Engine;
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{WOO_KEY}:{WOO_SECRET}"))
            );
            match headers.get("authorization").and_then(|v| v.to_str().ok()) {
                Some(v) if v == expected => Ok(()),
                _ => Err((
                    StatusCode::UNAUTHORIZED,
                    Json(
                        json!({"code": "woocommerce_rest_cannot_view", "message": "Sorry, you cannot list resources.", "data": {"status": 401}}),
                    ),
                )),
            }
        }
        async fn products(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> Reply {
            state.requests.lock().unwrap().push(format!(
                "GET /wp-json/wc/v3/products?include={}",
                query.get("include").cloned().unwrap_or_default()
            ));
            if let Err(e) = authorised(&headers) {
                return e;
            }
            let known = state.products.lock().unwrap().clone();
            let list: Vec<Value> = query
                .get("include")
                .map(|s| s.split(',').filter_map(|id| id.parse::<u64>().ok()).collect::<Vec<_>>())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|id| {
                    known.get(&id).map(|(purchasable, stock)| {
                        json!({"id": id, "status": "publish", "purchasable": purchasable, "stock_status": stock})
                    })
                })
                .collect();
            (StatusCode::OK, Json(Value::Array(list)))
        }
        async fn coupons(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> Reply {
            state
                .requests
                .lock()
                .unwrap()
                .push("POST /wp-json/wc/v3/coupons".into());
            if let Err(e) = authorised(&headers) {
                return e;
            }
            let Ok(coupon) = serde_json::from_slice::<Value>(&body) else {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"code": "rest_invalid_json", "message": "Invalid JSON body passed.", "data": {"status": 400}}),
                    ),
                );
            };
            let code = coupon["code"].as_str().unwrap_or_default().to_lowercase();
            let valid_type = matches!(
                coupon["discount_type"].as_str(),
                Some("percent" | "fixed_cart" | "fixed_product")
            );
            let valid_amount = coupon["amount"]
                .as_str()
                .is_some_and(|a| a.parse::<f64>().is_ok());
            if code.is_empty() || !valid_type || !valid_amount {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"code": "rest_invalid_param", "message": "Invalid parameter(s): discount_type, amount", "data": {"status": 400}}),
                    ),
                );
            }
            let mut coupons = state.coupons.lock().unwrap();
            if coupons
                .iter()
                .any(|c| c["code"].as_str().unwrap_or_default().to_lowercase() == code)
            {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"code": "woocommerce_rest_coupon_code_already_exists", "message": "The coupon code already exists", "data": {"status": 400}}),
                    ),
                );
            }
            let id = coupons.len() as u64 + 1;
            let mut created = coupon.clone();
            created["id"] = json!(id);
            created["code"] = json!(code);
            coupons.push(created.clone());
            (StatusCode::CREATED, Json(created))
        }
        async fn delete_coupon(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            axum::extract::Path(id): axum::extract::Path<u64>,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> Reply {
            state
                .requests
                .lock()
                .unwrap()
                .push(format!("DELETE /wp-json/wc/v3/coupons/{id}"));
            if let Err(e) = authorised(&headers) {
                return e;
            }
            if query.get("force").map(String::as_str) != Some("true") {
                return (
                    StatusCode::NOT_IMPLEMENTED,
                    Json(
                        json!({"code": "woocommerce_rest_trash_not_supported", "message": "Resource does not support trashing.", "data": {"status": 501}}),
                    ),
                );
            }
            let mut coupons = state.coupons.lock().unwrap();
            match coupons.iter().position(|c| c["id"] == json!(id)) {
                Some(i) => (StatusCode::OK, Json(coupons.remove(i))),
                None => (
                    StatusCode::NOT_FOUND,
                    Json(
                        json!({"code": "woocommerce_rest_shop_coupon_invalid_id", "message": "Invalid ID.", "data": {"status": 404}}),
                    ),
                ),
            }
        }
        async fn find_coupons(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> Reply {
            if let Err(e) = authorised(&headers) {
                return e;
            }
            let code = query
                .get("code")
                .cloned()
                .unwrap_or_default()
                .to_lowercase();
            let found: Vec<Value> = state
                .coupons
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c["code"].as_str() == Some(code.as_str()))
                .cloned()
                .collect();
            (StatusCode::OK, Json(Value::Array(found)))
        }
        fn invalid_order(id: u64) -> Reply {
            (
                StatusCode::NOT_FOUND,
                Json(
                    json!({"code": "woocommerce_rest_shop_order_invalid_id", "message": format!("Invalid ID {id}."), "data": {"status": 404}}),
                ),
            )
        }
        fn failing_write(state: &WooState) -> Option<Reply> {
            use std::sync::atomic::Ordering;
            let failed = state
                .fail_order_writes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            failed.then(|| {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(
                        json!({"code": "internal_server_error", "message": "There has been a critical error on this website.", "data": {"status": 500}}),
                    ),
                )
            })
        }
        fn json_body(body: &[u8]) -> Result<Value, Reply> {
            serde_json::from_slice::<Value>(body).map_err(|_| {
                (
                    StatusCode::BAD_REQUEST,
                    Json(
                        json!({"code": "rest_invalid_json", "message": "Invalid JSON body passed.", "data": {"status": 400}}),
                    ),
                )
            })
        }
        async fn list_orders(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            Query(query): Query<std::collections::HashMap<String, String>>,
        ) -> Reply {
            state.requests.lock().unwrap().push(format!(
                "GET /wp-json/wc/v3/orders?parent={}",
                query.get("parent").cloned().unwrap_or_default()
            ));
            if let Err(e) = authorised(&headers) {
                return e;
            }
            let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
            let per_page: usize = query
                .get("per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(10);
            let parents: Option<Vec<u64>> = query.get("parent").map(|p| {
                p.split(',')
                    .filter_map(|id| id.trim().parse().ok())
                    .collect()
            });
            let found: Vec<Value> = state
                .orders
                .lock()
                .unwrap()
                .values()
                .filter(|o| {
                    parents
                        .as_ref()
                        .is_none_or(|ps| ps.iter().any(|p| o["parent_id"] == json!(p)))
                })
                .skip(page.saturating_sub(1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            (StatusCode::OK, Json(Value::Array(found)))
        }
        async fn create_order(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> Reply {
            state
                .requests
                .lock()
                .unwrap()
                .push("POST /wp-json/wc/v3/orders".into());
            if let Err(e) = authorised(&headers) {
                return e;
            }
            let order = match json_body(&body) {
                Ok(order) => order,
                Err(e) => return e,
            };
            if let Some(failed) = failing_write(&state) {
                return failed;
            }
            let mut orders = state.orders.lock().unwrap();
            let id = orders.keys().next_back().copied().unwrap_or(1000).max(1000) + 1;
            let mut created = order.clone();
            created["id"] = json!(id);
            if created["parent_id"].is_null() {
                created["parent_id"] = json!(0);
            }
            if created["meta_data"].is_null() {
                created["meta_data"] = json!([]);
            }
            if order["set_paid"] == json!(true) {
                created["date_paid_gmt"] = json!("2026-03-01T09:00:00");
            }
            let mut next_line = 1;
            if let Some(lines) = created["line_items"].as_array_mut() {
                for line in lines {
                    line["id"] = json!(next_line);
                    next_line += 1;
                }
            }
            orders.insert(id, created.clone());
            state
                .orders_created
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (StatusCode::CREATED, Json(created))
        }
        /// `POST /orders`, held after the order was created while the hold is armed.
        async fn create_order_then_hold(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            body: axum::body::Bytes,
        ) -> Reply {
            let reply = create_order(State(state.clone()), headers, body).await;
            if reply.0 == StatusCode::CREATED {
                state.hold_order_creates.hold_here().await;
            }
            reply
        }
        async fn get_order(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            axum::extract::Path(id): axum::extract::Path<u64>,
        ) -> Reply {
            state
                .requests
                .lock()
                .unwrap()
                .push(format!("GET /wp-json/wc/v3/orders/{id}"));
            if let Err(e) = authorised(&headers) {
                return e;
            }
            match state.orders.lock().unwrap().get(&id) {
                Some(order) => (StatusCode::OK, Json(order.clone())),
                None => invalid_order(id),
            }
        }
        async fn update_order(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            axum::extract::Path(id): axum::extract::Path<u64>,
            body: axum::body::Bytes,
        ) -> Reply {
            state
                .requests
                .lock()
                .unwrap()
                .push(format!("PUT /wp-json/wc/v3/orders/{id}"));
            if let Err(e) = authorised(&headers) {
                return e;
            }
            let update = match json_body(&body) {
                Ok(update) => update,
                Err(e) => return e,
            };
            if let Some(failed) = failing_write(&state) {
                return failed;
            }
            let mut orders = state.orders.lock().unwrap();
            let Some(order) = orders.get_mut(&id) else {
                return invalid_order(id);
            };
            let Some(fields) = update.as_object() else {
                return json_body(b"").unwrap_err();
            };
            for (key, value) in fields {
                match key.as_str() {
                    // As WooCommerce: a line without an id is added, one with an id updated.
                    "line_items" => {
                        let lines = order["line_items"].as_array().cloned().unwrap_or_default();
                        let mut lines = lines;
                        for line in value.as_array().cloned().unwrap_or_default() {
                            match lines
                                .iter_mut()
                                .find(|l| !line["id"].is_null() && l["id"] == line["id"])
                            {
                                Some(known) => *known = line,
                                None => {
                                    let mut line = line;
                                    line["id"] = json!(lines.len() as u64 + 1);
                                    lines.push(line);
                                }
                            }
                        }
                        order["line_items"] = Value::Array(lines);
                    }
                    // Meta by key: an existing key is replaced, a new one added.
                    "meta_data" => {
                        let mut meta = order["meta_data"].as_array().cloned().unwrap_or_default();
                        for entry in value.as_array().cloned().unwrap_or_default() {
                            match meta.iter_mut().find(|m| m["key"] == entry["key"]) {
                                Some(known) => *known = entry,
                                None => meta.push(entry),
                            }
                        }
                        order["meta_data"] = Value::Array(meta);
                    }
                    _ => order[key] = value.clone(),
                }
            }
            (StatusCode::OK, Json(order.clone()))
        }
        async fn list_refunds(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            axum::extract::Path(id): axum::extract::Path<u64>,
        ) -> Reply {
            state
                .requests
                .lock()
                .unwrap()
                .push(format!("GET /wp-json/wc/v3/orders/{id}/refunds"));
            if let Err(e) = authorised(&headers) {
                return e;
            }
            if !state.orders.lock().unwrap().contains_key(&id) {
                return invalid_order(id);
            }
            let found = state
                .refunds
                .lock()
                .unwrap()
                .get(&id)
                .cloned()
                .unwrap_or_default();
            (StatusCode::OK, Json(Value::Array(found)))
        }
        async fn create_refund(
            State(state): State<Arc<WooState>>,
            headers: HeaderMap,
            axum::extract::Path(id): axum::extract::Path<u64>,
            body: axum::body::Bytes,
        ) -> Reply {
            state
                .requests
                .lock()
                .unwrap()
                .push(format!("POST /wp-json/wc/v3/orders/{id}/refunds"));
            if let Err(e) = authorised(&headers) {
                return e;
            }
            let refund = match json_body(&body) {
                Ok(refund) => refund,
                Err(e) => return e,
            };
            if !state.orders.lock().unwrap().contains_key(&id) {
                return invalid_order(id);
            }
            let mut refunds = state.refunds.lock().unwrap();
            let next = refunds.values().map(Vec::len).sum::<usize>() as u64 + 5000;
            let mut created = refund.clone();
            created["id"] = json!(next);
            created["parent_id"] = json!(id);
            // `api_refund` is write-only at WooCommerce; the fake keeps what was sent (default
            // true, as WooCommerce's) so tests can see it.
            created["api_refund"] = json!(refund["api_refund"].as_bool().unwrap_or(true));
            created["refunded_payment"] = created["api_refund"].clone();
            if created["meta_data"].is_null() {
                created["meta_data"] = json!([]);
            }
            refunds.entry(id).or_default().push(created.clone());
            (StatusCode::CREATED, Json(created))
        }
        let state = Arc::new(WooState::default());
        let app = axum::Router::new()
            .route("/wp-json/wc/v3/products", get(products))
            .route(
                "/wp-json/wc/v3/coupons",
                axum::routing::post(coupons).get(find_coupons),
            )
            .route(
                "/wp-json/wc/v3/coupons/{id}",
                axum::routing::delete(delete_coupon),
            )
            .route(
                "/wp-json/wc/v3/orders",
                get(list_orders).post(create_order_then_hold),
            )
            .route(
                "/wp-json/wc/v3/orders/{id}",
                get(get_order).put(update_order),
            )
            .route(
                "/wp-json/wc/v3/orders/{id}/refunds",
                get(list_refunds).post(create_refund),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.ok();
        });
        Self { port, state, task }
    }

    pub fn set_product(&self, id: u64, purchasable: bool, stock_status: &str) {
        self.state
            .products
            .lock()
            .unwrap()
            .insert(id, (purchasable, stock_status.to_owned()));
    }

    /// Seeds order `id` (a parent, as the store's checkout made it): `processing`, placed at
    /// `placed_at`, one line of product 42, `total` (a decimal string).
    pub fn put_order(&self, id: u64, placed_at: chrono::DateTime<chrono::Utc>, total: &str) {
        let placed = placed_at.format("%Y-%m-%dT%H:%M:%S").to_string();
        let order = json!({
            "id": id,
            "parent_id": 0,
            "status": "processing",
            "currency": "EUR",
            "date_created_gmt": placed,
            "total": total,
            "payment_method": "sandbox",
            "line_items": [{"id": 1, "product_id": 42, "quantity": 1, "total": total}],
            "meta_data": [],
        });
        self.state.orders.lock().unwrap().insert(id, order);
    }

    /// Order `id` as the store has it now.
    pub fn order(&self, id: u64) -> Option<Value> {
        self.state.orders.lock().unwrap().get(&id).cloned()
    }

    /// The child orders of `parent`.
    pub fn children_of(&self, parent: u64) -> Vec<Value> {
        self.state
            .orders
            .lock()
            .unwrap()
            .values()
            .filter(|o| o["parent_id"] == json!(parent))
            .cloned()
            .collect()
    }

    /// The next `n` order writes (`POST /orders`, `PUT /orders/{id}`) answer 500.
    pub fn fail_next_order_writes(&self, n: u32) {
        self.state
            .fail_order_writes
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many orders `POST /orders` created.
    pub fn orders_created(&self) -> usize {
        self.state
            .orders_created
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The refunds posted for order `order`.
    pub fn refunds_of(&self, order: u64) -> Vec<Value> {
        self.state
            .refunds
            .lock()
            .unwrap()
            .get(&order)
            .cloned()
            .unwrap_or_default()
    }

    /// From now on, `POST /orders` creates the order and then holds its answer unsent until
    /// [`FakeWoo::release_holds`]: a store that wrote the order for a client that died before
    /// the answer came.
    pub fn hold_after_order_create(&self) {
        self.state.hold_order_creates.arm();
    }

    /// Back to normal: held answers are sent, new ones are not held.
    pub fn release_holds(&self) {
        self.state.hold_order_creates.release();
    }

    /// Waits until `n` order creates held their answer (the caller bounds the wait).
    pub async fn until_order_create_held(&self, n: usize) {
        self.state.hold_order_creates.until_held(n).await;
    }

    /// Points `config` at this store (REST API and webhook secret).
    pub fn configure(&self, config: &mut Config) {
        config.woocommerce.url = Some(format!("http://127.0.0.1:{}", self.port));
        config.woocommerce.consumer_key = Some(WOO_KEY.into());
        config.woocommerce.consumer_secret = Some(WOO_SECRET.into());
        config.woocommerce.webhook_secret = Some(WOO_WEBHOOK_SECRET.into());
    }
}

impl Drop for FakeWoo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `X-WC-Webhook-Signature` of `body` under `secret`: base64 HMAC-SHA256, as WooCommerce signs.
pub fn wc_signature(secret: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `value` as WooCommerce writes a webhook body: PHP's `wp_json_encode` with its default
/// flags, which escapes `/` as `\/` and every non-ASCII character as `\uXXXX` (UTF-16).
pub fn wp_json_encode(value: &Value) -> Vec<u8> {
    let compact = serde_json::to_string(value).unwrap();
    let mut out = String::with_capacity(compact.len() + compact.len() / 8);
    for c in compact.chars() {
        match c {
            '/' => out.push_str("\\/"),
            c if c.is_ascii() => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.into_bytes()
}

/// A WooCommerce order as its order webhooks deliver it (REST API v3 shape, trimmed).
pub fn wc_order(id: u64, status: &str, payment_method: &str, total: &str, email: &str) -> Value {
    json!({
        "id": id,
        "parent_id": 0,
        "number": id.to_string(),
        "order_key": format!("wc_order_{id}"),
        "created_via": "checkout",
        "status": status,
        "currency": "EUR",
        "date_created": "2026-01-01T10:00:00",
        "date_created_gmt": "2026-01-01T10:00:00",
        "total": total,
        "customer_id": 0,
        "billing": {"first_name": "Ann", "email": email},
        "payment_method": payment_method,
        "payment_method_title": payment_method,
        "line_items": [{"id": 1, "product_id": 42, "quantity": 2, "total": total}],
        "coupon_lines": [],
        "meta_data": []
    })
}

impl TestApp {
    /// Delivers a WooCommerce order webhook signed with `secret` (None: unsigned).
    pub async fn wc_webhook(
        &self,
        topic: &str,
        body: &Value,
        secret: Option<&str>,
    ) -> (u16, Value) {
        self.wc_webhook_raw(topic, serde_json::to_vec(body).unwrap(), secret)
            .await
    }

    /// Delivers `raw` as a WooCommerce order webhook body, signed with `secret` over exactly
    /// these bytes (None: unsigned).
    pub async fn wc_webhook_raw(
        &self,
        topic: &str,
        raw: Vec<u8>,
        secret: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .post(self.url("/ocart/v1/webhooks/woocommerce"))
            .header("content-type", "application/json")
            .header("x-wc-webhook-topic", topic)
            .header("x-wc-webhook-source", "https://shop.example/")
            .header("x-wc-webhook-delivery-id", uuid::Uuid::new_v4().to_string());
        if let Some(secret) = secret {
            request = request.header("x-wc-webhook-signature", wc_signature(secret, &raw));
        }
        read(request.body(raw).send().await.unwrap()).await
    }
}
