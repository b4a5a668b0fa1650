//! Test harness: fresh databases (a uniquely named PostgreSQL database, or a SQLite file in a
//! temporary folder), dropped afterwards; a nats-server of the test's own; the app on port 0.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ocart_projections::Db;

/// The PostgreSQL server tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("OCART_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The shared NATS server (JetStream on) for tests that do not need to stop it.
pub fn nats_url() -> String {
    std::env::var("OCART_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Sqlite,
}

/// A database of one test's own, dropped when this is dropped.
pub struct FreshDb {
    pub url: String,
    pub kind: Kind,
    name: String,
    dir: Option<PathBuf>,
}

impl FreshDb {
    pub async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Postgres => Self::postgres().await,
            Kind::Sqlite => Self::sqlite(),
        }
    }

    /// A new, empty PostgreSQL database. Panics, naming what is missing, if the server is not
    /// reachable: the suite never skips silently.
    pub async fn postgres() -> Self {
        let admin = pg_admin_url();
        let name = format!("ocart_test_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {admin} ({e}); start it as the README says, or set OCART_TEST_PG_URL")
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await
            .expect("create test database");
        pool.close().await;
        let base = admin
            .rsplit_once('/')
            .map(|(b, _)| b.to_owned())
            .unwrap_or(admin.clone());
        Self {
            url: format!("{base}/{name}"),
            kind: Kind::Postgres,
            name,
            dir: None,
        }
    }

    /// A new SQLite file in a temporary folder.
    pub fn sqlite() -> Self {
        let dir =
            std::env::temp_dir().join(format!("ocart-test-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            url: format!("sqlite://{}", dir.join("ocart.db").display()),
            kind: Kind::Sqlite,
            name: String::new(),
            dir: Some(dir),
        }
    }

    /// The folder of a SQLite database (also a good data dir for the app).
    pub fn dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }

    /// A migrated pool on this database.
    pub async fn connect(&self) -> Db {
        let db = Db::connect(&self.url, 20)
            .await
            .expect("connect to test database");
        db.migrate().await.expect("migrate test database");
        db
    }
}

impl Drop for FreshDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if self.kind == Kind::Postgres {
            let name = self.name.clone();
            let admin = pg_admin_url();
            // Drop in a thread of its own: Drop cannot await, and the test's runtime may be
            // shutting down.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&pool)
                                .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// A nats-server process of the test's own, with JetStream, on a free port; killed on drop.
pub struct NatsServer {
    pub port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        let port = free_port();
        let store =
            std::env::temp_dir().join(format!("ocart-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store).expect("nats store dir");
        let mut server = Self {
            port,
            store,
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and store.
    pub fn restart(&mut self) {
        let bin = std::env::var("OCART_TEST_NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
        let child = Command::new(&bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {bin} ({e}); install nats-server as the README says")
            });
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start on port {}", self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// A TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

use std::sync::Arc;

use ocart_api::core::Core;
use ocart_api::{Application, Config};
use ocart_domain::ManualClock;
use serde_json::{json, Value};

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
        const WATCHED: [&str; 5] = [
            "projections",
            "sweeper",
            "recovery_opener",
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
        for _ in 0..50 {
            let head = self.core.log.stats().await.expect("log stats").1;
            let before = steps(self);
            assert!(
                !before.is_empty(),
                "settle needs the background processors running"
            );
            let mut stepped = false;
            for _ in 0..1_000 {
                let now = steps(self);
                if before.iter().all(|(name, n)| now.get(name).copied().unwrap_or(0) >= n + 2) {
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

impl FreshDb {
    fn placeholder() -> Self {
        Self {
            url: String::new(),
            kind: Kind::Sqlite,
            name: String::new(),
            dir: None,
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

/// The `ocart` binary of this build (built on first use if a plain `cargo test` did not).
pub fn ocart_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current exe");
        // target/<profile>/deps/e2e-… → target/<profile>/ocart
        let profile_dir = exe
            .parent()
            .and_then(|d| d.parent())
            .expect("target dir")
            .to_path_buf();
        let bin = profile_dir.join("ocart");
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo
            .args(["build", "-q", "-p", "ocart-api", "--bin", "ocart"])
            .current_dir(&workspace);
        // This process runs with the test crate's CARGO_PKG_*, CARGO_MANIFEST_* (and maybe
        // OUT_DIR) set; build scripts such as ring's rerun when those differ, which would
        // rebuild half the tree here and again in the next outer build. Build as a shell would.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("CARGO_PKG_")
                || key.starts_with("CARGO_MANIFEST_")
                || key.starts_with("CARGO_CRATE_")
                || key.starts_with("CARGO_BIN_")
                || key.starts_with("CARGO_PRIMARY_")
                || key.starts_with("CARGO_TARGET_TMPDIR")
                || key.starts_with("NEXTEST")
                || key == "OUT_DIR"
            {
                cargo.env_remove(key.as_ref());
            }
        }
        let status = cargo.status().expect("cargo build of the ocart binary");
        assert!(status.success(), "building the ocart binary failed");
        assert!(bin.exists(), "no ocart binary at {}", bin.display());
        bin
    })
    .clone()
}

/// Runs `ocart ARGS` against `db`, returning (exit code, stdout, stderr). Async, so a server
/// in the same test keeps running while the command does.
pub async fn ocart(db: &FreshDb, args: &[&str]) -> (i32, String, String) {
    let data_dir = db.dir().cloned().unwrap_or_else(std::env::temp_dir);
    let bin = tokio::task::spawn_blocking(ocart_bin)
        .await
        .expect("build the ocart binary");
    let out = tokio::process::Command::new(bin)
        .args(args)
        .env("OCART_DATABASE_URL", &db.url)
        .env("OCART_DATA_DIR", data_dir)
        .env_remove("OCART_NATS_URL")
        .env_remove("OCART_CONFIG")
        .output()
        .await
        .expect("run ocart");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl FreshDb {
    /// Another handle on the same database that does not drop it when dropped.
    pub fn alias(&self) -> FreshDb {
        FreshDb {
            url: self.url.clone(),
            kind: Kind::Sqlite,
            name: String::new(),
            dir: None,
        }
    }
}

/// An SMTP server for tests: speaks enough of RFC 5321 (EHLO/HELO, MAIL, RCPT, DATA with
/// dot-unstuffing, RSET, NOOP, QUIT) for lettre, and keeps every message it accepts.
pub struct SmtpSink {
    pub port: u16,
    messages: Arc<std::sync::Mutex<Vec<SinkMessage>>>,
    /// Refuse the next `n` DATA commands with a 451 (a transient failure).
    pub fail_next: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// A message the sink accepted.
#[derive(Debug, Clone)]
pub struct SinkMessage {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

impl SinkMessage {
    /// The first value of a header (unfolded), case-insensitive.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        unfolded.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind smtp");
        let port = listener.local_addr().expect("addr").port();
        let messages: Arc<std::sync::Mutex<Vec<SinkMessage>>> = Arc::default();
        let fail_next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (store, failing) = (messages.clone(), fail_next.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (store, failing) = (store.clone(), failing.clone());
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut lines = BufReader::new(read);
                    let _ = write.write_all(b"220 sink.test ESMTP\r\n").await;
                    let (mut from, mut to) = (String::new(), Vec::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") {
                            b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
                        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
                            b"250 ok\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            from = line[10..].trim().to_owned();
                            to.clear();
                            b"250 ok\r\n"
                        } else if upper.starts_with("RCPT TO:") {
                            to.push(line[8..].trim().to_owned());
                            b"250 ok\r\n"
                        } else if upper.starts_with("DATA") {
                            if failing
                                .fetch_update(
                                    std::sync::atomic::Ordering::SeqCst,
                                    std::sync::atomic::Ordering::SeqCst,
                                    |n| n.checked_sub(1),
                                )
                                .is_ok()
                            {
                                b"451 4.3.0 try again later\r\n"
                            } else {
                                let _ = write.write_all(b"354 go ahead\r\n").await;
                                let mut data = String::new();
                                loop {
                                    line.clear();
                                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                        return;
                                    }
                                    if line == ".\r\n" {
                                        break;
                                    }
                                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                                    data.push_str(unstuffed);
                                }
                                store.lock().unwrap().push(SinkMessage {
                                    from: from.clone(),
                                    to: to.clone(),
                                    data,
                                });
                                b"250 2.0.0 queued\r\n"
                            }
                        } else if upper.starts_with("RSET") {
                            from.clear();
                            to.clear();
                            b"250 ok\r\n"
                        } else if upper.starts_with("QUIT") {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            b"502 5.5.2 not implemented\r\n"
                        };
                        if write.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            port,
            messages,
            fail_next,
            task,
        }
    }

    pub fn messages(&self) -> Vec<SinkMessage> {
        self.messages.lock().unwrap().clone()
    }

    /// Points `config` at this sink (plain SMTP, no auth).
    pub fn configure(&self, config: &mut Config) {
        config.email.transport = "smtp".into();
        config.email.smtp.host = "127.0.0.1".into();
        config.email.smtp.port = self.port;
        config.email.smtp.tls = "none".into();
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A WooCommerce store at the edge of the world: the REST API parts OCart calls
/// (`GET /wp-json/wc/v3/products`, `POST /wp-json/wc/v3/coupons`) behind basic auth with a
/// consumer key and secret, answering WooCommerce's error shapes, plus a signer for the
/// order webhooks it would deliver.
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

/// An authoritative DNS server for tests (UDP): answers TXT queries from its table, NXDOMAIN
/// for names it does not know. Real DNS messages (hickory-proto), so resolvers talk to it as to
/// any name server.
pub struct DnsServer {
    pub addr: std::net::SocketAddr,
    records: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DnsServer {
    pub async fn start() -> Self {
        use hickory_proto::op::{Message, ResponseCode};
        use hickory_proto::rr::rdata::TXT;
        use hickory_proto::rr::{Name, RData, Record, RecordType};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let records: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>> =
            Default::default();
        let table = records.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
                reply.metadata.authoritative = true;
                reply.metadata.recursion_desired = query.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                let mut known = false;
                for q in &query.queries {
                    reply.add_query(q.clone());
                    let name = q
                        .name()
                        .to_ascii()
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    if let Some(txts) = table.lock().unwrap().get(&name) {
                        known = true;
                        if q.query_type() == RecordType::TXT {
                            for txt in txts {
                                // Long values are split into 255-byte character-strings.
                                let parts: Vec<String> = txt
                                    .as_bytes()
                                    .chunks(255)
                                    .map(|c| String::from_utf8_lossy(c).into_owned())
                                    .collect();
                                reply.add_answer(Record::from_rdata(
                                    Name::from_ascii(format!("{name}.")).unwrap(),
                                    60,
                                    RData::TXT(TXT::new(parts)),
                                ));
                            }
                        }
                    }
                }
                if !known {
                    reply.metadata.response_code = ResponseCode::NXDomain;
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        Self {
            addr,
            records,
            task,
        }
    }

    /// Publishes a TXT record at `name`.
    pub fn txt(&self, name: &str, value: &str) {
        self.records
            .lock()
            .unwrap()
            .entry(name.to_ascii_lowercase())
            .or_default()
            .push(value.to_owned());
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
