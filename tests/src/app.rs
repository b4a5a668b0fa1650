//! The app on port 0 with a fresh database and a manual clock: its config, start and stop, the
//! request helpers, and the waits (`settle`, `eventually`).

use std::sync::Arc;
use std::time::Duration;

use ocart_api::core::Core;
use ocart_api::{Application, Config};
use ocart_domain::ManualClock;
use serde_json::{json, Value};

use crate::db::{FreshDb, Kind};

/// A running app on port 0 with a fresh database and a manual clock.
pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub admin: String,
    pub core: Arc<Core>,
    pub clock: Arc<ManualClock>,
    pub client: reqwest::Client,
    pub db: FreshDb,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// The clock tests start at.
pub fn start_time() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-03-01T09:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc)
}

/// A config for tests: the fresh database, port 0, a high rate limit, quick polling.
pub fn test_config(db: &FreshDb) -> Config {
    let mut config = Config {
        database_url: Some(db.url.clone()),
        data_dir: db.dir().cloned().unwrap_or_else(std::env::temp_dir),
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..Config::default()
    };
    // No rate limits unless a test sets them (0 turns a limit off).
    config.rate_limit.capture_requests = 0;
    config.rate_limit.restore_requests = 0;
    config.rate_limit.pixel_requests = 0;
    config.rate_limit.unsubscribe_per_token = 0;
    config.rate_limit.bump_requests = 0;
    config.processors.poll_interval_ms = 100;
    // Generous bounds: two tests run at once on two cores, and PostgreSQL's global reader waits
    // for every open transaction on the server, whichever test's database it belongs to.
    config.http.read_your_writes_timeout_ms = 10_000;
    // Each test its own outbox, whatever the backend; links on an HTTPS origin.
    config.recovery.outbox_dir =
        Some(std::env::temp_dir().join(format!("ocart-outbox-{}", uuid::Uuid::new_v4().simple())));
    config.recovery.public_url = "https://ocart.shop.test".into();
    config.recovery.store_name = "Mug Store".into();
    config.email.from = "Mug Store <shop@shop.test>".into();
    config
}

/// The `.eml` files in the app's outbox, by message key, with their text.
pub fn outbox_emails(app: &TestApp) -> Vec<(String, String)> {
    let dir = ocart_processors::recovery::outbox_dir(
        &app.core.config.recovery,
        &app.core.config.data_dir,
    )
    .join("email");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .map(|p| {
                    (
                        p.file_stem().unwrap().to_string_lossy().into_owned(),
                        std::fs::read_to_string(&p).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

pub async fn spawn_app(kind: Kind) -> TestApp {
    spawn_app_with(kind, |_| {}).await
}

pub async fn spawn_app_with(kind: Kind, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let db = FreshDb::new(kind).await;
    let mut config = test_config(&db);
    adjust(&mut config);
    spawn_on(db, config).await
}

/// Starts an app on an existing database (a second instance, or a restart).
pub async fn spawn_on(db: FreshDb, config: Config) -> TestApp {
    let clock = Arc::new(ManualClock::new(start_time()));
    let app = Application::build(config, clock.clone())
        .await
        .expect("build app");
    let port = app.port();
    let core = app.core();
    let admin = match app.admin_token.clone() {
        Some(token) => token,
        None => {
            let meta = ocart_projections::CommandMeta::system("test", None, chrono::Utc::now());
            let created = core
                .create_token(
                    "test admin",
                    ocart_domain::token::Capability::ALL.to_vec(),
                    &meta,
                )
                .await
                .expect("token");
            created.secret
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async move {
        let _ = stop_rx.await;
    }));
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        admin,
        core,
        clock,
        client: reqwest::Client::new(),
        db,
        stop: Some(stop_tx),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server gracefully and waits for it; returns the database for a restart.
    pub async fn stop(mut self) -> FreshDb {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
        self.core.db.close().await;
        std::mem::replace(&mut self.db, FreshDb::placeholder())
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        read(resp).await
    }

    pub async fn admin_get(&self, path: &str) -> (u16, Value) {
        self.get(path, &self.admin).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        read(req.send().await.expect("request")).await
    }

    pub async fn capture(&self, body: &Value) -> (u16, Value) {
        self.post("/ocart/v1/checkout/capture", None, body).await
    }

    /// Creates a token with the given capabilities through the API.
    pub async fn token_with(&self, caps: &[&str]) -> (String, String) {
        let (status, body) = self
            .post(
                "/ocart/v1/tokens",
                Some(&self.admin),
                &json!({"name": "t", "capabilities": caps}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        (
            body["token_id"].as_str().unwrap().to_owned(),
            body["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Waits until the background processors are quiet: every processor that reacts to the
    /// log or the clock has completed two steps begun after this call, and the log did not
    /// move meanwhile, so what one step wrote has been seen by the others. A test asserts that
    /// something did *not* happen after this, never after a fixed sleep. (Retention, which
    /// steps once a minute, is driven by hand where a test needs it.)
    pub async fn settle(&self) {
        const WATCHED: [&str; 7] = [
            "projections",
            "upsell_charger",
            "sweeper",
            "recovery_opener",
            "recovery_followups",
            "dispatcher",
            "privacy_eraser",
        ];
        let steps = |app: &TestApp| -> std::collections::HashMap<String, u64> {
            app.core
                .processors
                .snapshot()
                .into_iter()
                .filter(|p| WATCHED.contains(&p.name.as_str()))
                .map(|p| (p.name, p.steps))
                .collect()
        };
        // The processors start once this instance holds the processor lease, which may be a
        // moment after the app answers HTTP: wait for every watched one to be registered.
        for _ in 0..2_000 {
            if steps(self).len() == WATCHED.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..50 {
            let head = self.core.log.stats().await.expect("log stats").1;
            let before = steps(self);
            assert!(
                before.len() == WATCHED.len(),
                "settle needs the background processors running: {:?}",
                self.core.processors.snapshot()
            );
            let mut stepped = false;
            for _ in 0..1_000 {
                let now = steps(self);
                if before
                    .iter()
                    .all(|(name, n)| now.get(name).copied().unwrap_or(0) >= n + 2)
                {
                    stepped = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(
                stepped,
                "the processors did not step within 10 s: {:?}",
                self.core.processors.snapshot()
            );
            if self.core.log.stats().await.expect("log stats").1 == head {
                return;
            }
        }
        panic!("the processors never settled: the log kept moving");
    }

    /// Waits until `check` holds for GET `path` (bounded), returning the last body.
    pub async fn eventually(&self, path: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            let (status, body) = self.admin_get(path).await;
            if status == 200 && check(&body) {
                return body;
            }
            last = body;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("condition on {path} never held; last body {last}");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// A valid capture body for `email` with `quantity` mugs.
pub fn capture_body(session: &str, email: &str, quantity: i64) -> Value {
    json!({
        "session_token": session,
        "email": email,
        "phone": "+14155550123",
        "name": "Ann Example",
        "consent": true,
        "consent_text": "Email me a reminder about my cart",
        "source": "classic",
        "stage": "checkout",
        "currency": "EUR",
        "items": [{"product_id": 42, "sku": "MUG-1", "name": "Mug", "quantity": quantity, "unit_price": 1250, "categories": ["kitchen"]}],
        "totals": {"subtotal": 1250 * quantity, "total": 1250 * quantity}
    })
}

/// A session token of the right shape.
pub fn session() -> String {
    format!("sess_{}", uuid::Uuid::new_v4().simple())
}
