//! `ocart bench upsell`: the one-click upsell path end to end — issue-token → accept → the
//! charge (Stripe's PaymentIntents protocol, against an in-process Stripe stand-in that keeps
//! Stripe's idempotency rule) → the child order (against an in-process WooCommerce stand-in) —
//! with 64 concurrent shoppers: accepts/s, the accept request's p50 and p99, and the time from
//! the accept to the child order written (`upsell/accepted`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use ocart_domain::SystemClock;
use serde_json::{json, Value};

use super::capture::{percentile, LoadConnection};
use super::{machine, BenchStore, UpsellArgs};
use crate::config::Config;
use crate::Application;

/// The WooCommerce stand-in's orders, indexed by parent as WooCommerce's own table is: the
/// `GET /orders?parent=` look-up costs a hash probe, not a scan of every order (a scan here
/// would charge the load generator's process for work a real store does on its own machine).
#[derive(Default)]
struct Orders {
    last_id: u64,
    by_id: HashMap<u64, Value>,
    by_parent: HashMap<u64, Vec<u64>>,
}

#[derive(Default)]
struct Stand {
    /// Stripe: idempotency key → the PaymentIntent it created.
    intents: Mutex<HashMap<String, Value>>,
    /// WooCommerce: orders by id, and children by parent.
    orders: Mutex<Orders>,
    charges: AtomicU64,
}

/// `POST /v1/payment_intents`: Stripe's answer for a saved card that needs nothing more; the
/// same key answers the first PaymentIntent.
async fn create_intent(
    State(stand): State<Arc<Stand>>,
    headers: HeaderMap,
    body: String,
) -> Json<Value> {
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    let mut intents = stand.intents.lock().expect("intents");
    let intent = intents
        .entry(key)
        .or_insert_with(|| {
            stand.charges.fetch_add(1, Ordering::Relaxed);
            let id = format!("pi_{}", uuid::Uuid::new_v4().simple());
            json!({
                "id": id, "object": "payment_intent", "status": "succeeded",
                "amount": form.get("amount").and_then(|a| a.parse::<i64>().ok()).unwrap_or(0),
                "currency": form.get("currency").cloned().unwrap_or_default(),
                "client_secret": format!("{id}_secret"),
                "metadata": {},
            })
        })
        .clone();
    Json(intent)
}

async fn list_orders(
    State(stand): State<Arc<Stand>>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    let parent: u64 = q.get("parent").and_then(|p| p.parse().ok()).unwrap_or(0);
    let orders = stand.orders.lock().expect("orders");
    let children = orders.by_parent.get(&parent).map(Vec::as_slice);
    Json(Value::Array(
        children
            .unwrap_or_default()
            .iter()
            .filter_map(|id| orders.by_id.get(id).cloned())
            .collect(),
    ))
}

async fn create_order(
    State(stand): State<Arc<Stand>>,
    Json(mut body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut orders = stand.orders.lock().expect("orders");
    orders.last_id += 1;
    let id = 1_000_000 + orders.last_id;
    body["id"] = json!(id);
    if let Some(parent) = body["parent_id"].as_u64() {
        orders.by_parent.entry(parent).or_default().push(id);
    }
    orders.by_id.insert(id, body.clone());
    (StatusCode::CREATED, Json(body))
}

async fn stand_in() -> anyhow::Result<(String, Arc<Stand>)> {
    let stand = Arc::new(Stand::default());
    let app = Router::new()
        .route("/v1/payment_intents", post(create_intent))
        .route("/wp-json/wc/v3/orders", get(list_orders).post(create_order))
        .with_state(stand.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((base, stand))
}

async fn post_json(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!("{url}: {status} {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or_default())
}

pub(super) async fn run(args: UpsellArgs) -> anyhow::Result<()> {
    println!(
        "# ocart bench upsell — {}; {} shoppers, {} s; Stripe and WooCommerce stand-ins in process",
        machine(),
        args.shoppers,
        args.common.seconds
    );
    println!("| backend | accepts | accepts/s | accept p50 ms | accept p99 ms | accept → child order p50 ms | p99 ms | charges | errors | CPU ms per accept: ocart + postgres |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for backend in &args.common.backends {
        let (stand_base, stand) = stand_in().await?;
        let store = BenchStore::new(backend, &args.common.pg_url).await?;
        let mut config = Config {
            database_url: Some(store.url.clone()),
            data_dir: store.dir.clone().unwrap_or_else(std::env::temp_dir),
            bind: "127.0.0.1:0".parse()?,
            ..Config::default()
        };
        config.gateways.stripe = Some(serde_json::from_value(json!({
            "secret_key": "sk_test_bench", "api_base": stand_base,
        }))?);
        config.woocommerce = serde_json::from_value(json!({
            "url": stand_base, "consumer_key": "ck_bench", "consumer_secret": "cs_bench",
        }))?;
        let app = Application::build(config, Arc::new(SystemClock)).await?;
        let port = app.port();
        let core = app.core();
        let admin = app
            .admin_token
            .clone()
            .ok_or_else(|| anyhow::anyhow!("a fresh store creates an admin token"))?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stop_rx.await;
        }));

        // Seed: an upsell, a funnel with its step, and paid parent orders with a saved card.
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}/ocart/v1");
        let offer = post_json(
            &client,
            format!("{base}/upsells"),
            &admin,
            json!({
            "name": "Mug warmer", "currency": "EUR",
            "product": {"product_id": 77, "name": "Mug warmer", "price": 2500, "quantity": 1},
            "pricing": {"type": "discount_pct", "value": "20"}}),
        )
        .await?;
        let offer_id = offer["id"].as_str().unwrap_or_default().to_owned();
        post_json(
            &client,
            format!("{base}/funnels"),
            &admin,
            json!({
            "id": "bench", "name": "Bench", "status": "active",
            "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": offer_id,
                 "branches": {"accepted": "thanks", "declined": "thanks"}},
                {"key": "thanks", "type": "thank_you"}]}),
        )
        .await?;
        let orders = args.orders;
        let results: Vec<anyhow::Result<Value>> = futures::stream::iter(0..orders)
            .map(|i| {
                post_json(
                    &client,
                    format!("{base}/orders"),
                    &admin,
                    json!({
                "order_id": (10_000 + i).to_string(), "status": "processing", "currency": "EUR",
                "total": 4000, "payment": {"gateway": "stripe", "customer": format!("cus_{i}"),
                "payment_method": "pm_card_visa"}}),
                )
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for r in results {
            r?;
        }
        // The seeded orders projected and followed by every processor (every checkpoint, the
        // projections' and the processors', at the head) before the clock starts: the run
        // measures the upsells, not a backlog of 6,000 orders.
        let head = core.log.head();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let behind = ocart_projections::queries::checkpoints(&core.db)
                .await?
                .iter()
                .any(|(_, at)| at.position < head);
            if !behind {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..args.shoppers {
            let (stop, next, errors, admin, offer_id) = (
                stop.clone(),
                next.clone(),
                errors.clone(),
                admin.clone(),
                offer_id.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut accepts = Vec::with_capacity(10_000);
                let mut completions = Vec::with_capacity(10_000);
                let Ok(mut conn) = LoadConnection::open(port).await else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return (accepts, completions);
                };
                let auth = format!("authorization: Bearer {admin}\r\n");
                let mut body = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= orders {
                        break;
                    }
                    let issue = format!(
                        r#"{{"order_id":"{}","funnel_id":"bench","step":"upsell"}}"#,
                        10_000 + i
                    );
                    match conn
                        .send(
                            "POST",
                            "/ocart/v1/upsells/issue-token",
                            &auth,
                            &issue,
                            &mut body,
                            true,
                        )
                        .await
                    {
                        Ok(201) => {}
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let issued: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let token = issued["token"].as_str().unwrap_or_default().to_owned();
                    let accept = format!(r#"{{"token":"{token}"}}"#);
                    let key = format!("idempotency-key: bench-{i}\r\n");
                    let started = Instant::now();
                    match conn
                        .send(
                            "POST",
                            &format!("/ocart/v1/upsells/{offer_id}/accept"),
                            &key,
                            &accept,
                            &mut body,
                            true,
                        )
                        .await
                    {
                        Ok(202) => accepts.push(started.elapsed().as_micros() as u64),
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let reply: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let id = reply["acceptance_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    // Wait for the child order (the charger's work) as the hosted page does: a
                    // long poll that answers when the status moves on from the last one seen.
                    let mut last = "charging".to_owned();
                    let deadline = Instant::now() + Duration::from_secs(30);
                    loop {
                        let status_path = format!(
                            "/ocart/v1/upsells/acceptances/{id}?token={token}&status={last}&wait=10"
                        );
                        match conn
                            .send("GET", &status_path, "", "", &mut body, true)
                            .await
                        {
                            Ok(200) => {
                                let view: Value = serde_json::from_slice(&body).unwrap_or_default();
                                if view["status"] == "accepted" {
                                    completions.push(started.elapsed().as_micros() as u64);
                                    break;
                                }
                                last = view["status"].as_str().unwrap_or("charging").to_owned();
                            }
                            _ => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                        }
                        if Instant::now() > deadline {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
                (accepts, completions)
            }));
        }
        let started = Instant::now();
        let cpu_before = super::cpu_ticks();
        tokio::time::sleep(Duration::from_secs(args.common.seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let cpu_after = super::cpu_ticks();
        let (mut accepts, mut completions) = (Vec::new(), Vec::new());
        for t in tasks {
            let (a, c) = t.await?;
            accepts.extend(a);
            completions.extend(c);
        }
        let elapsed = started.elapsed().as_secs_f64();
        accepts.sort_unstable();
        completions.sort_unstable();
        // Ticks are 10 ms; the process's share includes the load generator's.
        let per_accept = |before: u64, after: u64| {
            after.saturating_sub(before) as f64 * 10.0 / completions.len().max(1) as f64
        };
        println!(
            "| {backend} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} + {:.2} |",
            completions.len(),
            completions.len() as f64 / elapsed,
            percentile(&accepts, 0.50),
            percentile(&accepts, 0.99),
            percentile(&completions, 0.50),
            percentile(&completions, 0.99),
            stand.charges.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
            per_accept(cpu_before.0, cpu_after.0),
            per_accept(cpu_before.1, cpu_after.1),
        );
        let _ = stop_tx.send(());
        let _ = server.await;
        core.db.close().await;
        store.remove().await;
    }
    Ok(())
}
