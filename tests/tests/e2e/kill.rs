//! Crash recovery with the real `ocart` binary and a real SIGKILL (issue 11, section 6): an
//! `ocart serve` process charges an upsell at the fake Stripe, is killed while the answer is
//! still on its way (the gateway charged, nothing recorded), and a second `ocart serve` on the
//! same database finishes it: one charge, one child order, `upsell/accepted` once. Then the
//! same with the kill after the charge was recorded and while the store's answer to the child
//! order is on its way: one child order, found again rather than written twice.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ocart_projections::Db;
use ocart_tests::{
    free_port, ocart_bin, FakeStripe, FakeWoo, FreshDb, Kind, PM_VISA, STRIPE_KEY,
    STRIPE_WEBHOOK_SECRET, WOO_KEY, WOO_SECRET, WOO_WEBHOOK_SECRET,
};
use serde_json::{json, Value};

/// The parent order (a WooCommerce order id).
const PARENT: u64 = 700;
/// The bound on every wait for the server (a start on SQLite waits up to the lease's 15 s for
/// the killed holder's lease to expire).
const PATIENCE: Duration = Duration::from_secs(90);

/// What one crash test runs on: the fakes, the database, the config file, the binary.
struct Setup {
    stripe: FakeStripe,
    woo: FakeWoo,
    db: FreshDb,
    dir: PathBuf,
    config: PathBuf,
    bin: PathBuf,
    client: reqwest::Client,
}

impl Setup {
    async fn new(kind: Kind) -> Self {
        let stripe = FakeStripe::start().await;
        let woo = FakeWoo::start().await;
        woo.put_order(PARENT, chrono::Utc::now(), "50.00");
        let db = FreshDb::new(kind).await;
        let dir = match db.dir() {
            Some(dir) => dir.clone(),
            None => {
                let dir = std::env::temp_dir()
                    .join(format!("ocart-kill-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir).expect("data dir");
                dir
            }
        };
        let config = dir.join("ocart.toml");
        std::fs::write(
            &config,
            format!(
                r#"data_dir = {dir:?}
database_url = {url:?}

[processors]
poll_interval_ms = 100

[recovery]
public_url = "https://ocart.shop.test"

[woocommerce]
url = "http://127.0.0.1:{woo}"
consumer_key = {WOO_KEY:?}
consumer_secret = {WOO_SECRET:?}
webhook_secret = {WOO_WEBHOOK_SECRET:?}
timeout_secs = 60

[gateways.stripe]
secret_key = {STRIPE_KEY:?}
api_base = {stripe:?}
webhook_secrets = [{STRIPE_WEBHOOK_SECRET:?}]
timeout_secs = 60
"#,
                dir = dir.display().to_string(),
                url = db.url,
                woo = woo.port,
                stripe = stripe.url(),
            ),
        )
        .expect("config file");
        let bin = tokio::task::spawn_blocking(ocart_bin)
            .await
            .expect("build the ocart binary");
        Self {
            stripe,
            woo,
            db,
            dir,
            config,
            bin,
            client: reqwest::Client::new(),
        }
    }

    /// `ocart --config … serve` on a free port, its output in `log` (a file of the data dir).
    async fn serve(&self, log: &str) -> Server {
        let port = free_port();
        let log = self.dir.join(log);
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut child = tokio::process::Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
            .current_dir(&self.dir)
            .env_remove("OCART_DATABASE_URL")
            .env_remove("OCART_DATA_DIR")
            .env_remove("OCART_NATS_URL")
            .env_remove("OCART_CONFIG")
            .env_remove("OCART_BIND")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("start ocart serve");
        let started = tokio::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("the server's status") {
                panic!("ocart serve exited ({status}): {}", read_log(&log));
            }
            let ping = self
                .client
                .get(format!("http://127.0.0.1:{port}/ocart/v1/ping"))
                .send()
                .await;
            if ping.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "ocart serve did not come up: {}",
                read_log(&log)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Server { child, port, log }
    }

    /// Every event of the log as (type, aggregate id), oldest first, read from the table: on
    /// PostgreSQL the global reader (`ocart events export`) holds back events behind any
    /// transaction still open on the server, whichever test's database it belongs to.
    async fn events(&self) -> Vec<(String, String)> {
        let sql = "SELECT event_type, aggregate_id FROM events ORDER BY global_position";
        match self.db.connect().await {
            Db::Pg(pool) => sqlx::query_as(sql).fetch_all(&pool).await,
            Db::Lite(pool) => sqlx::query_as(sql).fetch_all(&pool).await,
        }
        .expect("events")
    }

    /// `ocart --config … events export` (bounded wait) once it shows `event_type` of
    /// `aggregate_id`: every event it exported, as JSON.
    async fn exported_once_it_shows(&self, event_type: &str, aggregate_id: &str) -> Vec<Value> {
        let started = tokio::time::Instant::now();
        loop {
            let out = tokio::process::Command::new(&self.bin)
                .arg("--config")
                .arg(&self.config)
                .args(["events", "export"])
                .current_dir(&self.dir)
                .env_remove("OCART_DATABASE_URL")
                .env_remove("OCART_DATA_DIR")
                .env_remove("OCART_NATS_URL")
                .env_remove("OCART_CONFIG")
                .output()
                .await
                .expect("run ocart events export");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line"))
                .collect();
            if events
                .iter()
                .any(|e| e["type"] == event_type && e["aggregate_id"] == aggregate_id)
            {
                return events;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the export never showed {event_type} of {aggregate_id}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `method path` on `server` with `token`, answering (status, JSON body).
    async fn call(
        &self,
        server: &Server,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("http://127.0.0.1:{}{path}", server.port))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        ocart_tests::read(request.send().await.expect("request")).await
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if self.db.dir().is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One `ocart serve` process.
struct Server {
    child: tokio::process::Child,
    port: u16,
    log: PathBuf,
}

impl Server {
    /// `kill -9`: the process stops where it is, nothing of it runs after.
    async fn kill_9(mut self) {
        let pid = self.child.id().expect("the server runs");
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("a killed process ends")
            .expect("its status");
        assert_eq!(exit.signal(), Some(9), "killed by SIGKILL: {exit}");
    }

    /// SIGTERM and the wait for a graceful stop.
    async fn stop(mut self) {
        let pid = self.child.id().expect("the server runs");
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        let exit = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("stops on SIGTERM")
            .expect("its status");
        assert!(exit.success(), "{exit}: {}", read_log(&self.log));
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The admin token the first start printed (bounded wait for the line).
async fn admin_token(server: &Server) -> String {
    for _ in 0..300 {
        let log = read_log(&server.log);
        if let Some((_, after)) = log.split_once("keep it:") {
            if let Some(token) = after.split_whitespace().next() {
                return token.to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no admin token in the first start's output");
}

/// Through HTTP: an upsell offer, an active funnel `main` showing it at step `upsell`, the
/// paid parent order with its saved Stripe payment, a one-click token, and the shopper's
/// accept. Answers the acceptance id.
async fn accept_an_upsell(setup: &Setup, server: &Server, admin: &str) -> String {
    use reqwest::Method;
    let (status, offer) = setup
        .call(
            server,
            Method::POST,
            "/ocart/v1/upsells",
            admin,
            Some(&json!({"name": "Mug warmer", "currency": "EUR",
                "product": {"product_id": 77, "name": "Mug warmer", "price": 2500, "quantity": 1},
                "pricing": {"type": "discount_pct", "value": "20"}})),
        )
        .await;
    assert_eq!(status, 201, "{offer}");
    let offer = offer["id"].as_str().expect("offer id").to_owned();
    let (status, funnel) = setup
        .call(
            server,
            Method::POST,
            "/ocart/v1/funnels",
            admin,
            Some(
                &json!({"id": "main", "name": "Main", "status": "active", "steps": [
                {"key": "checkout", "type": "checkout", "branches": {"default": "upsell"}},
                {"key": "upsell", "type": "upsell", "offer_id": offer,
                 "branches": {"accepted": "thanks", "declined": "thanks"}},
                {"key": "thanks", "type": "thank_you"}]}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{funnel}");
    let (status, order) = setup
        .call(
            server,
            Method::POST,
            "/ocart/v1/orders",
            admin,
            Some(&json!({"order_id": PARENT.to_string(), "status": "processing",
                "currency": "EUR", "total": 5000, "payment_method": "stripe",
                "payment": {"gateway": "stripe", "customer": "cus_ocart", "payment_method": PM_VISA}})),
        )
        .await;
    assert_eq!(status, 200, "{order}");
    let issue = json!({"order_id": PARENT.to_string(), "funnel_id": "main", "step": "upsell"});
    let mut issued = Value::Null;
    for _ in 0..100 {
        let (status, body) = setup
            .call(
                server,
                Method::POST,
                "/ocart/v1/upsells/issue-token",
                admin,
                Some(&issue),
            )
            .await;
        issued = body;
        if status == 201 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = issued["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token issued: {issued}"))
        .to_owned();
    let response = setup
        .client
        .post(format!(
            "http://127.0.0.1:{}/ocart/v1/upsells/{offer}/accept",
            server.port
        ))
        .header("Idempotency-Key", "kill-accept-1")
        .json(&json!({"token": token}))
        .send()
        .await
        .expect("accept");
    let (status, accepted) = ocart_tests::read(response).await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["acceptance_id"]
        .as_str()
        .expect("acceptance id")
        .to_owned();
    assert_eq!(
        id,
        ocart_domain::upsell::acceptance_id(&PARENT.to_string(), "main", "upsell")
    );
    id
}

/// Polls the acceptance (bounded) until it is `accepted`; answers its view.
async fn until_accepted(setup: &Setup, server: &Server, admin: &str, id: &str) -> Value {
    let started = tokio::time::Instant::now();
    loop {
        let (status, body) = setup
            .call(
                server,
                reqwest::Method::GET,
                &format!("/ocart/v1/upsells/acceptances/{id}"),
                admin,
                None,
            )
            .await;
        if status == 200 && body["status"] == "accepted" {
            return body;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "acceptance {id} never became accepted after the restart; last {status} {body}: {}",
            read_log(&server.log)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The types of `events` about acceptance `id`, in order.
fn types_of(events: &[(String, String)], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|(_, aggregate)| aggregate == id)
        .map(|(event_type, _)| event_type.clone())
        .collect()
}

fn count(types: &[String], event_type: &str) -> usize {
    types.iter().filter(|t| *t == event_type).count()
}

fn has_meta(order: &Value, key: &str, value: &str) -> bool {
    order["meta_data"]
        .as_array()
        .is_some_and(|m| m.iter().any(|e| e["key"] == key && e["value"] == value))
}

/// After the restart: the acceptance accepted with the one charge, the one child order of the
/// parent carrying the acceptance id and that charge, each upsell event once in the log.
async fn assert_once(setup: &Setup, accepted: &Value, id: &str) {
    assert_eq!(setup.stripe.charges(), 1, "one PaymentIntent charged");
    let charge_ref = accepted["charge_ref"].as_str().expect("a charge reference");
    assert_eq!(setup.stripe.intent(charge_ref)["status"], "succeeded");
    assert_eq!(
        setup.stripe.intent(charge_ref)["metadata"]["ocart_acceptance_id"],
        id,
        "{}",
        setup.stripe.intent(charge_ref)
    );
    let keys: Vec<Option<String>> = setup
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/payment_intents")
        .map(|r| r.idempotency_key)
        .collect();
    assert!(
        keys.iter().all(|k| k.is_some() && *k == keys[0]),
        "every create carries the one key: {keys:?}"
    );
    let children = setup.woo.children_of(PARENT);
    assert_eq!(children.len(), 1, "one child order: {children:?}");
    let child = &children[0];
    assert!(has_meta(child, "_ocart_acceptance_id", id), "{child}");
    assert_eq!(child["transaction_id"], charge_ref);
    assert_eq!(
        accepted["child_order_id"].as_str(),
        Some(child["id"].to_string().as_str())
    );
    assert_eq!(setup.woo.orders_created(), 1);
    let events = setup.events().await;
    let types = types_of(&events, id);
    for once in [
        "upsell/before_charge",
        "upsell/charge_succeeded",
        "upsell/accepted",
    ] {
        assert_eq!(count(&types, once), 1, "{once} once: {types:?}");
        let everywhere = events.iter().filter(|(t, _)| t == once).count();
        assert_eq!(everywhere, 1, "{once} once in the whole log");
    }
    // The CLI's export says the same.
    let exported = setup.exported_once_it_shows("upsell/accepted", id).await;
    let accepted_events = exported
        .iter()
        .filter(|e| e["type"] == "upsell/accepted")
        .count();
    assert_eq!(accepted_events, 1, "upsell/accepted once in the export");
}

/// Killed after the gateway charged and before anything was recorded: after the restart, one
/// charge (the key's replay answers the first), one child order, `upsell/accepted` once.
async fn killed_after_the_gateway_charged(kind: Kind) {
    let setup = Setup::new(kind).await;
    setup.stripe.hold_after_charge();
    let first = setup.serve("first.log").await;
    let admin = admin_token(&first).await;
    let id = accept_an_upsell(&setup, &first, &admin).await;
    tokio::time::timeout(PATIENCE, setup.stripe.until_held(1))
        .await
        .unwrap_or_else(|_| panic!("no charge was made: {}", read_log(&first.log)));
    assert_eq!(setup.stripe.charges(), 1, "the gateway charged");
    first.kill_9().await;
    // As the crash left it: the charge key recorded, no outcome.
    let types = types_of(&setup.events().await, &id);
    assert_eq!(count(&types, "upsell/before_charge"), 1, "{types:?}");
    assert_eq!(count(&types, "upsell/charge_succeeded"), 0, "{types:?}");
    assert!(setup.woo.children_of(PARENT).is_empty());

    setup.stripe.release_holds();
    let second = setup.serve("second.log").await;
    let accepted = until_accepted(&setup, &second, &admin, &id).await;
    second.stop().await;
    assert!(
        setup.stripe.creates() >= 2,
        "the restart asked again with the same key"
    );
    assert_once(&setup, &accepted, &id).await;
}

#[tokio::test]
async fn postgres_a_server_killed_after_the_gateway_charged_charges_once() {
    killed_after_the_gateway_charged(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_server_killed_after_the_gateway_charged_charges_once() {
    killed_after_the_gateway_charged(Kind::Sqlite).await;
}

/// Killed after the charge was recorded, while the store's answer to the child order was on
/// its way (the order exists, its id was never recorded): after the restart the child order is
/// found by its `_ocart_acceptance_id`, not written again, and the gateway is not asked again.
async fn killed_before_the_child_order_was_recorded(kind: Kind) {
    let setup = Setup::new(kind).await;
    setup.woo.hold_after_order_create();
    let first = setup.serve("first.log").await;
    let admin = admin_token(&first).await;
    let id = accept_an_upsell(&setup, &first, &admin).await;
    tokio::time::timeout(PATIENCE, setup.woo.until_order_create_held(1))
        .await
        .unwrap_or_else(|_| panic!("no child order was written: {}", read_log(&first.log)));
    first.kill_9().await;
    let types = types_of(&setup.events().await, &id);
    assert_eq!(count(&types, "upsell/charge_succeeded"), 1, "{types:?}");
    assert_eq!(count(&types, "upsell/accepted"), 0, "{types:?}");
    assert_eq!(setup.woo.children_of(PARENT).len(), 1);

    setup.woo.release_holds();
    let second = setup.serve("second.log").await;
    let accepted = until_accepted(&setup, &second, &admin, &id).await;
    second.stop().await;
    assert_eq!(
        setup.stripe.creates(),
        1,
        "a recorded charge is not asked for again"
    );
    assert_once(&setup, &accepted, &id).await;
}

#[tokio::test]
async fn postgres_a_server_killed_before_the_child_order_was_recorded_writes_it_once() {
    killed_before_the_child_order_was_recorded(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_server_killed_before_the_child_order_was_recorded_writes_it_once() {
    killed_before_the_child_order_was_recorded(Kind::Sqlite).await;
}
