//! `ocart bench resolve`: `GET /ocart/v1/funnels/resolve` — the checkout page's hot read — for
//! a store with 1,000 bumps and 100 funnels, at 64 connections: lookups/s, p50 and p99.
//!
//! The store is seeded through the HTTP API: bumps targeted at one product each (one in a
//! hundred at the benchmark carts' mug, so every answer carries ten priced bumps; all 1,000 are
//! checked for each cart),
//! funnels triggered by one product each with priorities, one default; and captured carts
//! whose session tokens the shoppers resolve by.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ocart_domain::SystemClock;
use serde_json::{json, Value};

use super::capture::{capture_payload, load, LoadConnection};
use super::{machine, BenchStore, ResolveArgs};
use crate::config::Config;
use crate::Application;

/// POSTs `body` with the admin token and checks it was created.
async fn create(
    client: &reqwest::Client,
    url: String,
    token: &str,
    body: Value,
) -> anyhow::Result<()> {
    let response = client
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        anyhow::bail!(
            "{url}: {status} {}",
            response.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

fn bump(i: usize) -> Value {
    // One bump in a hundred targets the mug (product 42) the bench carts hold.
    let product = if i.is_multiple_of(100) { 42 } else { 1_000 + i };
    json!({
        "name": format!("Bump {i}"),
        "currency": "EUR",
        "product": {"product_id": 5_000 + i, "name": format!("Add-on {i}"), "price": 900, "quantity": 1},
        "pricing": if i.is_multiple_of(2) { json!({"type": "fixed_addon", "amount": 300 + i}) } else { json!({"type": "percent_addon", "value": "7.5"}) },
        "targeting": {"all": [{"product_in_cart": product}, {"cart_min_total": 100}]},
        "display": {"headline": format!("Add the add-on {i}"), "copy": "One click, shipped with your order."}
    })
}

fn funnel(i: usize) -> Value {
    let layout = ["one_step", "two_step", "three_step"][i % 3];
    json!({
        "id": format!("funnel-{i}"),
        "name": format!("Funnel {i}"),
        "status": "active",
        "trigger": {"rules": {"any": [{"product_in_cart": 2_000 + i}]}, "priority": (i % 50) as i64, "is_default": i == 0},
        "settings": {"layout": layout},
        "steps": [
            {"key": "checkout", "type": "checkout", "branches": {"default": "thanks"}},
            {"key": "thanks", "type": "thank_you"}
        ]
    })
}

pub(super) async fn run(args: ResolveArgs) -> anyhow::Result<()> {
    println!(
        "# ocart bench resolve — {}; {} bumps, {} funnels, {} carts; {} connections, {} s",
        machine(),
        args.offers,
        args.funnels,
        args.carts,
        args.connections,
        args.common.seconds
    );
    println!("| backend | lookups | lookups/s | p50 ms | p99 ms | non-2xx | bumps per answer |");
    println!("|---|---|---|---|---|---|---|");
    for backend in &args.common.backends {
        let mut seeded = Seeded::open(
            backend,
            &args.common.pg_url,
            args.offers,
            args.funnels,
            args.carts,
        )
        .await?;
        let (port, conn) = (seeded.port, &mut seeded.conn);
        // Let the projections apply the seed, then check one answer.
        let mut bumps_per_answer = 0;
        for _ in 0..600 {
            let mut body = Vec::new();
            let status = conn
                .send("GET", &captured(args.carts - 1), "", "", &mut body, true)
                .await?;
            let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
            bumps_per_answer = answer["bumps"].as_array().map_or(0, |b| b.len());
            if status == 200 && answer["funnel"].is_object() && bumps_per_answer > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let carts = args.carts;
        let load = load(
            port,
            args.connections,
            Duration::from_secs(args.common.seconds),
            200..201,
            move |i| {
                let i = i % carts;
                ("GET", captured(i), String::new())
            },
        )
        .await?;
        println!(
            "| {backend} | {} | {:.0} | {:.2} | {:.2} | {} | {bumps_per_answer} |",
            load.requests(),
            load.per_second(),
            load.ms(0.50),
            load.ms(0.99),
            load.errors
        );
        seeded.close().await;
    }
    Ok(())
}

/// The resolve of captured cart `i` (by its session token), as the shoppers send it.
pub(super) fn captured(i: u64) -> String {
    format!(
        "/ocart/v1/funnels/resolve?session_token=bench-session-{i:012}-{}",
        i % 7
    )
}

/// A server on a fresh store of one backend, seeded through the HTTP API as this benchmark
/// measures it (bumps, funnels, captured carts); `ocart bench assign` measures the same store.
pub(super) struct Seeded {
    pub(super) port: u16,
    pub(super) core: Arc<crate::core::Core>,
    pub(super) admin: String,
    /// The connection that captured the carts, for checks between runs.
    pub(super) conn: LoadConnection,
    store: BenchStore,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Seeded {
    /// Starts the server on a fresh `backend` store and seeds `offers` bumps, `funnels`
    /// funnels and `carts` captured carts.
    pub(super) async fn open(
        backend: &str,
        pg_url: &str,
        offers: usize,
        funnels: usize,
        carts: u64,
    ) -> anyhow::Result<Self> {
        let store = BenchStore::new(backend, pg_url).await?;
        let mut config = Config {
            database_url: Some(store.url.clone()),
            data_dir: store.dir.clone().unwrap_or_else(std::env::temp_dir),
            bind: "127.0.0.1:0".parse()?,
            ..Config::default()
        };
        config.rate_limit.capture_requests = 0;
        let app = Application::build(config, Arc::new(SystemClock)).await?;
        let port = app.port();
        let core = app.core();
        let admin = app
            .admin_token
            .clone()
            .ok_or_else(|| anyhow::anyhow!("a fresh store creates an admin token"))?;
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async move {
            let _ = stop_rx.await;
        }));

        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}/ocart/v1");
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..offers)
            .map(|i| create(&client, format!("{base}/bumps"), &admin, bump(i)))
            .buffer_unordered(8)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<()>>()?;
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..funnels)
            .map(|i| create(&client, format!("{base}/funnels"), &admin, funnel(i)))
            .buffer_unordered(8)
            .collect()
            .await;
        results.into_iter().collect::<anyhow::Result<()>>()?;
        let mut conn = LoadConnection::open(port).await?;
        let mut sink = Vec::new();
        for i in 0..carts {
            let status = conn
                .send(
                    "POST",
                    "/ocart/v1/checkout/capture",
                    "",
                    &capture_payload(i),
                    &mut sink,
                    false,
                )
                .await?;
            anyhow::ensure!((200..300).contains(&status), "capture answered {status}");
        }
        Ok(Self {
            port,
            core,
            admin,
            conn,
            store,
            stop,
            server,
        })
    }

    /// Stops the server and removes the store.
    pub(super) async fn close(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.core.db.close().await;
        self.store.remove().await;
    }
}
