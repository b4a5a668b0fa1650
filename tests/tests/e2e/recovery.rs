//! Abandoned-cart recovery through HTTP, on a manual clock: sequences, runs, the dispatcher
//! and its guards, over the outbox and a real SMTP conversation with an in-test SMTP server.

use chrono::Duration;
use ocart_domain::recovery::{RecoveryRun, RunCommand};
use ocart_domain::Clock;
use ocart_projections::{CommandMeta, Commands};
use ocart_tests::{
    capture_body, outbox_emails, session, spawn_app, spawn_app_with, Kind, SmtpSink, TestApp,
};
use serde_json::{json, Value};

/// Captures a cart for `email` and returns its id.
pub(crate) async fn capture(app: &TestApp, email: &str) -> String {
    let (status, reply) = app.capture(&capture_body(&session(), email, 2)).await;
    assert_eq!(status, 202, "{reply}");
    reply["cart_id"].as_str().unwrap().to_owned()
}

/// Waits for the run of `cart_id` to satisfy `check`; answers it.
pub(crate) async fn run_of(app: &TestApp, cart_id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let page = app
        .eventually(&format!("/ocart/v1/recovery/runs?cart_id={cart_id}"), |b| {
            b["runs"].as_array().is_some_and(|r| r.len() == 1) && check(&b["runs"][0])
        })
        .await;
    page["runs"][0].clone()
}

pub(crate) async fn wait_for_emails(app: &TestApp, count: usize) -> Vec<(String, String)> {
    for _ in 0..300 {
        let emails = outbox_emails(app);
        if emails.len() >= count {
            return emails;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "expected {count} emails in the outbox, found {}",
        outbox_emails(app).len()
    );
}

/// The events of `event_type` in the log, up to its head. (On PostgreSQL the gap-free reader
/// stops short of transactions still open anywhere on the server, such as other tests', so a
/// read may end before this process's last append: read again until it reaches it.)
pub(crate) async fn events_of(app: &TestApp, event_type: &str) -> Vec<Value> {
    let head = app.core.log.head();
    for _ in 0..500 {
        let events = app
            .core
            .log
            .read_after(Default::default(), 100_000)
            .await
            .unwrap();
        if events
            .last()
            .map_or(head <= 0, |e| e.global_position >= head)
        {
            return events
                .iter()
                .filter(|e| e.event_type == event_type)
                .map(|e| e.payload_value())
                .collect();
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the log reader never reached the head of the log ({head})");
}

pub(crate) fn header<'a>(eml: &'a str, name: &str) -> Option<&'a str> {
    eml.split("\r\n\r\n")
        .next()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

async fn sequence_api(kind: Kind) {
    let app = spawn_app(kind).await;
    // A fresh install has the default sequence: 45 minutes, 24 hours, 72 hours, coupon on 3.
    let list = app
        .eventually("/ocart/v1/recovery/sequences", |b| {
            b["sequences"].as_array().is_some_and(|s| s.len() == 1)
        })
        .await;
    let default = &list["sequences"][0];
    assert_eq!(default["sequence_id"], "default");
    assert_eq!(default["trigger_type"], "cart_abandoned");
    assert_eq!(default["active"], true);
    let delays: Vec<i64> = default["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["delay_min"].as_i64().unwrap())
        .collect();
    assert_eq!(delays, vec![45, 1440, 4320]);
    let coupons: Vec<bool> = default["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["coupon"].as_bool().unwrap())
        .collect();
    assert_eq!(coupons, vec![false, false, true]);

    // Created with steps out of order: saved normalised, and the saved value is returned.
    let (status, created) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "Checkout", "trigger_type": "checkout_abandoned", "steps": [
                {"channel": "email", "delay_min": 5, "template": "recovery_email_1"},
                {"channel": "sms", "delay_min": 10, "template": "sms_1"},
                {"channel": "email", "delay_min": 99999, "template": "recovery_email_3", "coupon": true}
            ]}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["sequence_id"].as_str().unwrap().to_owned();
    let delays: Vec<i64> = created["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["delay_min"].as_i64().unwrap())
        .collect();
    assert_eq!(delays, vec![15, 30, 10080]);
    let shown = app
        .eventually(&format!("/ocart/v1/recovery/sequences/{id}"), |b| {
            b["name"] == "Checkout"
        })
        .await;
    assert_eq!(shown["steps"][1]["channel"], "sms");

    // Malformed sequences are refused with every field named, and nothing is written.
    let before = events_of(&app, "recovery/sequence_created").await.len();
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": " ", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "email", "delay_min": -3, "template": ""}
            ]}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"name"), "{problem}");
    assert!(fields.contains(&"steps[0].template"), "{problem}");
    assert!(fields.contains(&"steps[0].delay_min"), "{problem}");
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "x", "trigger_type": "on_tuesdays", "steps": []}),
        )
        .await;
    assert!(status == 400 || status == 422, "{status} {problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("trigger_type")
            || problem.to_string().contains("on_tuesdays"),
        "{problem}"
    );
    let (status, _) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "x", "trigger_type": "cart_abandoned", "steps": [], "discount": 5}),
        )
        .await;
    assert!(status == 400 || status == 422);
    assert_eq!(
        events_of(&app, "recovery/sequence_created").await.len(),
        before
    );

    // PATCH changes what is given; DELETE archives.
    let resp = app
        .client
        .patch(app.url(&format!("/ocart/v1/recovery/sequences/{id}")))
        .bearer_auth(&app.admin)
        .json(&json!({"name": "Checkout rescue", "active": false}))
        .send()
        .await
        .unwrap();
    let (status, patched) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["name"], "Checkout rescue");
    assert_eq!(patched["active"], false);
    assert_eq!(patched["steps"].as_array().unwrap().len(), 3);
    let resp = app
        .client
        .delete(app.url(&format!("/ocart/v1/recovery/sequences/{id}")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let (status, archived) = ocart_tests::read(resp).await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["archived"], true);
    app.eventually("/ocart/v1/recovery/sequences", |b| {
        b["sequences"].as_array().is_some_and(|s| s.len() == 1)
    })
    .await;
    let all = app
        .eventually("/ocart/v1/recovery/sequences?include_archived=true", |b| {
            b["sequences"].as_array().is_some_and(|s| s.len() == 2)
        })
        .await;
    let archived_row = all["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sequence_id"] == id.as_str())
        .unwrap();
    assert_eq!(archived_row["archived"], true);
    let (status, _) = app.admin_get("/ocart/v1/recovery/sequences/nope").await;
    assert_eq!(status, 404);

    // Reports readers read; only recovery managers write.
    let (_, reader) = app.token_with(&["ocart_view_reports"]).await;
    let (status, _) = app.get("/ocart/v1/recovery/sequences", &reader).await;
    assert_eq!(status, 200);
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&reader),
            &json!({"name": "x", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "email", "delay_min": 60, "template": "recovery_email_1"}]}),
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    let (_, manager) = app.token_with(&["ocart_manage_recovery"]).await;
    let (status, _) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&manager),
            &json!({"name": "x", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "email", "delay_min": 60, "template": "recovery_email_1"}]}),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn postgres_sequences_are_managed_and_normalised() {
    sequence_api(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_sequences_are_managed_and_normalised() {
    sequence_api(Kind::Sqlite).await;
}

/// Capture → abandon → three emails over SMTP at 45 minutes, 24 hours and 72 hours, with the
/// unsubscribe headers; then the run completes and sends nothing more.
async fn three_emails_over_smtp(kind: Kind) {
    let sink = SmtpSink::start().await;
    let app = spawn_app_with(kind, |c| sink.configure(c)).await;
    let cart = capture(&app, "ann@example.com").await;
    app.clock.advance(Duration::minutes(31));
    let run = run_of(&app, &cart, |r| r["status"] == "pending").await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let abandoned_at = chrono::DateTime::parse_from_rfc3339(run["abandoned_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let due = chrono::DateTime::parse_from_rfc3339(run["next_due_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    assert_eq!(due - abandoned_at, Duration::minutes(45));

    // Nothing before the first step is due.
    app.clock.advance(Duration::minutes(44));
    app.settle().await;
    assert!(sink.messages().is_empty());
    app.clock.advance(Duration::minutes(1));
    run_of(&app, &cart, |r| r["current_step"] == 1).await;
    let first = sink.messages();
    assert_eq!(first.len(), 1);
    let m = &first[0];
    assert_eq!(m.to, vec!["<ann@example.com>".to_owned()]);
    assert_eq!(
        m.header("Message-ID").unwrap(),
        format!("<{run_id}.s1.a1@shop.test>")
    );
    assert_eq!(m.header("From").unwrap(), "\"Mug Store\" <shop@shop.test>");
    let unsubscribe = m.header("List-Unsubscribe").unwrap();
    assert!(
        unsubscribe.starts_with("<https://ocart.shop.test/u/"),
        "{unsubscribe}"
    );
    assert!(
        unsubscribe.contains("<mailto:shop@shop.test?subject=unsubscribe>"),
        "{unsubscribe}"
    );
    assert_eq!(
        m.header("List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    assert!(m
        .header("Content-Type")
        .unwrap()
        .starts_with("multipart/alternative"));
    assert!(m.data.contains("Content-Type: text/plain"));
    assert!(m.data.contains("Content-Type: text/html"));
    assert!(m.data.contains("https://ocart.shop.test/r/"));

    // 24 hours and 72 hours after abandonment.
    app.clock.set(abandoned_at + Duration::hours(24));
    run_of(&app, &cart, |r| r["current_step"] == 2).await;
    assert_eq!(sink.messages().len(), 2);
    app.clock.set(abandoned_at + Duration::hours(72));
    let done = run_of(&app, &cart, |r| r["status"] == "stopped").await;
    assert_eq!(done["stop_reason"], "completed");
    assert_eq!(done["current_step"], 3);
    let all = sink.messages();
    assert_eq!(all.len(), 3);
    let ids: Vec<String> = all
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=3)
            .map(|s| format!("<{run_id}.s{s}.a1@shop.test>"))
            .collect::<Vec<_>>()
    );
    // Each message has its own restore and unsubscribe links.
    let unsubs: std::collections::BTreeSet<String> = all
        .iter()
        .map(|m| m.header("List-Unsubscribe").unwrap())
        .collect();
    assert_eq!(unsubs.len(), 3);
    // The run shows every message as sent.
    let (_, detail) = app
        .admin_get(&format!("/ocart/v1/recovery/runs/{run_id}"))
        .await;
    let statuses: Vec<&str> = detail["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["sent", "sent", "sent"]);
    let dispatched = events_of(&app, "recovery/dispatched").await;
    assert_eq!(dispatched.len(), 3);
    assert_eq!(dispatched[2]["step"], 3);
    // Nothing more, ever.
    app.clock.advance(Duration::days(10));
    app.settle().await;
    assert_eq!(sink.messages().len(), 3);
}

#[tokio::test]
async fn postgres_three_emails_go_out_over_smtp_on_schedule() {
    three_emails_over_smtp(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_three_emails_go_out_over_smtp_on_schedule() {
    three_emails_over_smtp(Kind::Sqlite).await;
}

/// An order placed between two steps converts the run with the revenue and stops it.
#[tokio::test]
async fn an_order_between_steps_converts_the_run_and_stops_the_sequence() {
    let app = spawn_app(Kind::Sqlite).await;
    let cart = capture(&app, "bob@example.com").await;
    app.clock.advance(Duration::minutes(31));
    run_of(&app, &cart, |r| r["status"] == "pending").await;
    app.clock.advance(Duration::minutes(45));
    run_of(&app, &cart, |r| r["current_step"] == 1).await;
    assert_eq!(wait_for_emails(&app, 1).await.len(), 1);
    let (status, body) = app
        .post(
            &format!("/ocart/v1/carts/{cart}/convert"),
            Some(&app.admin),
            &json!({"order_id": "1042", "revenue": 2500}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let run = run_of(&app, &cart, |r| r["status"] == "converted").await;
    assert_eq!(run["revenue_recovered"], 2500);
    assert_eq!(run["order_id"], "1042");
    let converted = events_of(&app, "recovery/converted").await;
    assert_eq!(converted.len(), 1);
    assert_eq!(converted[0]["revenue"], 2500);
    let (_, detail) = app
        .admin_get(&format!(
            "/ocart/v1/recovery/runs/{}",
            run["run_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(detail["notifications"][1]["status"], "canceled");
    app.clock.advance(Duration::days(4));
    app.settle().await;
    assert_eq!(outbox_emails(&app).len(), 1);
}

/// One shopper with three abandoned carts gets one sequence, not three.
#[tokio::test]
async fn a_shopper_with_three_carts_receives_one_sequence() {
    let app = spawn_app(Kind::Sqlite).await;
    let carts = [
        capture(&app, "cara@example.com").await,
        capture(&app, "cara@example.com").await,
        capture(&app, "cara@example.com").await,
    ];
    app.clock.advance(Duration::minutes(31));
    for cart in &carts {
        run_of(&app, cart, |r| r["status"] == "pending").await;
    }
    app.clock.advance(Duration::minutes(45));
    let mut sent = 0;
    let mut quiet = 0;
    for cart in &carts {
        let run = run_of(&app, cart, |r| {
            r["current_step"] == 1 || r["status"] == "stopped"
        })
        .await;
        if run["current_step"] == 1 {
            sent += 1;
        } else {
            assert_eq!(run["stop_reason"], "quiet_period");
            quiet += 1;
        }
    }
    assert_eq!((sent, quiet), (1, 2));
    assert_eq!(outbox_emails(&app).len(), 1);
}

/// With recovery switched off, carts are still captured and abandoned, but no run opens.
#[tokio::test]
async fn the_master_switch_off_opens_no_runs() {
    let app = spawn_app(Kind::Sqlite).await;
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&json!({"recovery": {"enabled": false}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let cart = capture(&app, "dan@example.com").await;
    app.clock.advance(Duration::minutes(31));
    app.eventually(&format!("/ocart/v1/carts/{cart}"), |c| {
        c["status"] == "abandoned"
    })
    .await;
    // Let the opener see the abandonment; still no run.
    app.settle().await;
    let (_, page) = app
        .admin_get(&format!("/ocart/v1/recovery/runs?cart_id={cart}"))
        .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 0, "{page}");
    assert!(events_of(&app, "recovery/run_started").await.is_empty());
}

/// Drives projections, the sweeper, the opener and a dispatcher by hand (processors off).
pub(crate) struct Manual {
    pub(crate) app: TestApp,
    /// One projection pass at a time, as the processors lease guarantees in a server.
    projecting: tokio::sync::Mutex<()>,
}

impl Manual {
    pub(crate) async fn start(kind: Kind, adjust: impl FnOnce(&mut ocart_api::Config)) -> Self {
        let app = spawn_app_with(kind, |c| {
            c.processors.enabled = false;
            adjust(c);
        })
        .await;
        Self {
            app,
            projecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs every projection up to the head of the log. (On PostgreSQL the global reader
    /// stops short of transactions still open anywhere on the server, so one pass may not
    /// reach the head: pass again until it does.)
    pub(crate) async fn project(&self) {
        let _one = self.projecting.lock().await;
        let head = self.app.core.log.head();
        let db = &self.app.core.db;
        for _ in 0..500 {
            let runners = self.app.core.runners().await.unwrap();
            for runner in &runners {
                runner.catch_up().await.unwrap();
            }
            let mut done = true;
            for projector in self.app.core.projectors() {
                done &= ocart_projections::wait_for_position(
                    db,
                    projector.name(),
                    head,
                    std::time::Duration::ZERO,
                )
                .await
                .unwrap();
            }
            if done {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the projections never reached the head of the log");
    }

    /// Sweeps, projects and opens runs.
    pub(crate) async fn settle(&self) {
        let sweeper =
            ocart_processors::Sweeper::new(self.app.core.log.clone(), self.app.clock.clone());
        self.project().await;
        sweeper.try_handle_next().await.unwrap();
        self.project().await;
        ocart_processors::recovery::RecoveryOpener::new(
            self.app.core.log.clone(),
            self.app.clock.clone(),
        )
        .catch_up()
        .await
        .unwrap();
        self.project().await;
    }

    pub(crate) async fn dispatch(&self) -> ocart_processors::recovery::PassReport {
        let dispatcher = self.app.core.dispatcher().unwrap();
        let mut total = ocart_processors::recovery::PassReport::default();
        loop {
            let (outcome, report) = dispatcher.try_handle_next().await.unwrap();
            self.project().await;
            total += report;
            if outcome == ocart_projections::Outcome::Idle {
                return total;
            }
        }
    }

    pub(crate) async fn only_run(&self, cart: &str) -> Value {
        let (_, page) = self
            .app
            .admin_get(&format!("/ocart/v1/recovery/runs?cart_id={cart}"))
            .await;
        assert_eq!(page["runs"].as_array().unwrap().len(), 1, "{page}");
        page["runs"][0].clone()
    }
}

/// A dispatcher that dies between claiming a step and sending it: the step is neither lost
/// nor sent twice. Its claim blocks others until it is stale, then one dispatcher takes it
/// over under the same Message-ID.
async fn crash_between_claim_and_send(kind: Kind) {
    let sink = SmtpSink::start().await;
    let m = Manual::start(kind, |c| sink.configure(c)).await;
    let cart = capture(&m.app, "erin@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    let run = m.only_run(&cart).await;
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    m.app.clock.advance(Duration::minutes(45));
    // The "crashed" dispatcher: claims, then never sends.
    let runs: Commands<RecoveryRun> = Commands::new(m.app.core.log.clone(), ());
    let meta = CommandMeta::system("dispatcher", None, m.app.clock.now());
    runs.execute(
        &run_id,
        RunCommand::Claim {
            at: m.app.clock.now(),
            stale_after: Duration::minutes(10),
        },
        &meta,
    )
    .await
    .unwrap();
    m.project().await;
    assert_eq!(m.only_run(&cart).await["status"], "running");
    // While the claim is fresh, nobody sends.
    assert_eq!(m.dispatch().await.sent, 0);
    m.app.clock.advance(Duration::minutes(5));
    assert_eq!(m.dispatch().await.sent, 0);
    assert!(sink.messages().is_empty());
    // Stale: taken over once, under the same message key.
    m.app.clock.advance(Duration::minutes(6));
    let (a, b) = tokio::join!(m.dispatch(), m.dispatch());
    assert_eq!(a.sent + b.sent, 1);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].header("Message-ID").unwrap(),
        format!("<{run_id}.s1.a1@shop.test>")
    );
    let claims = events_of(&m.app, "recovery/step_claimed").await;
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[0]["resumed"], false);
    assert_eq!(claims[1]["resumed"], true);
    assert_eq!(events_of(&m.app, "recovery/dispatched").await.len(), 1);
    assert_eq!(m.only_run(&cart).await["current_step"], 1);
}

#[tokio::test]
async fn postgres_a_crash_between_claim_and_send_neither_loses_nor_repeats_the_step() {
    crash_between_claim_and_send(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_crash_between_claim_and_send_neither_loses_nor_repeats_the_step() {
    crash_between_claim_and_send(Kind::Sqlite).await;
}

/// Two dispatchers at once, over many due runs: every step is sent exactly once.
async fn two_dispatchers(kind: Kind) {
    let sink = SmtpSink::start().await;
    let m = Manual::start(kind, |c| sink.configure(c)).await;
    let mut carts = Vec::new();
    for i in 0..30 {
        carts.push(capture(&m.app, &format!("shopper{i}@example.com")).await);
    }
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    m.app.clock.advance(Duration::minutes(45));
    let (a, b) = tokio::join!(m.dispatch(), m.dispatch());
    assert_eq!(a.sent + b.sent, 30, "{a:?} {b:?}");
    let messages = sink.messages();
    assert_eq!(messages.len(), 30);
    let ids: std::collections::BTreeSet<String> = messages
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 30, "a message was sent twice");
    for cart in &carts {
        assert_eq!(m.only_run(cart).await["current_step"], 1);
    }
}

#[tokio::test]
async fn postgres_two_dispatchers_send_each_step_once() {
    two_dispatchers(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_two_dispatchers_send_each_step_once() {
    two_dispatchers(Kind::Sqlite).await;
}

/// A pass takes at most `batch_size` due runs. The next pass goes on after them even while
/// the read table still shows them due (here the projections do not run between passes), so
/// no pass is spent refusing claims on runs already handled, and each run gets its first
/// step exactly once.
async fn passes_go_on(kind: Kind) {
    let sink = SmtpSink::start().await;
    let m = Manual::start(kind, |c| {
        sink.configure(c);
        c.recovery.batch_size = 3;
    })
    .await;
    let mut carts = Vec::new();
    for i in 0..8 {
        carts.push(capture(&m.app, &format!("batch{i}@example.com")).await);
    }
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    m.app.clock.advance(Duration::minutes(45));
    let dispatcher = m.app.core.dispatcher().unwrap();
    let mut sent = Vec::new();
    for _ in 0..4 {
        let (_, report) = dispatcher.try_handle_next().await.unwrap();
        assert_eq!(
            report.skipped, 0,
            "a pass met runs already handled: {report:?}"
        );
        sent.push(report.sent);
    }
    assert_eq!(sent, [3, 3, 2, 0]);
    m.project().await;
    let ids: std::collections::BTreeSet<String> = sink
        .messages()
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 8);
    assert_eq!(sink.messages().len(), 8, "a message was sent twice");
    for cart in &carts {
        assert_eq!(m.only_run(cart).await["current_step"], 1);
    }
}

#[tokio::test]
async fn postgres_passes_go_on_where_the_last_one_stopped() {
    passes_go_on(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_passes_go_on_where_the_last_one_stopped() {
    passes_go_on(Kind::Sqlite).await;
}

/// A failed send is retried 15 × attempt minutes later, under a new message key.
#[tokio::test]
async fn a_failed_send_is_retried_fifteen_minutes_later() {
    let sink = SmtpSink::start().await;
    let m = Manual::start(Kind::Sqlite, |c| sink.configure(c)).await;
    let cart = capture(&m.app, "fay@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    m.app.clock.advance(Duration::minutes(45));
    sink.fail_next.store(1, std::sync::atomic::Ordering::SeqCst);
    let report = m.dispatch().await;
    assert_eq!((report.sent, report.failed), (0, 1));
    let run = m.only_run(&cart).await;
    assert_eq!(run["status"], "pending");
    assert_eq!(run["current_step"], 0);
    let failed = events_of(&m.app, "recovery/failed").await;
    assert_eq!(failed.len(), 1);
    assert!(failed[0]["error"].as_str().unwrap().contains("451"));
    m.app.clock.advance(Duration::minutes(14));
    assert_eq!(m.dispatch().await.sent, 0);
    m.app.clock.advance(Duration::minutes(1));
    assert_eq!(m.dispatch().await.sent, 1);
    let messages = sink.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0]
        .header("Message-ID")
        .unwrap()
        .contains(".s1.a2@"));
    let (_, detail) = m
        .app
        .admin_get(&format!(
            "/ocart/v1/recovery/runs/{}",
            run["run_id"].as_str().unwrap()
        ))
        .await;
    let lifecycle: Vec<(i64, &str)> = detail["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["attempt"].as_i64().unwrap(),
                n["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(lifecycle, vec![(1, "failed"), (2, "sent"), (1, "queued")]);
}

/// Carts abandoned longer ago than `recovery.max_age_days` are stopped, not mailed, even when
/// the dispatcher comes back after a long downtime; within the age, overdue steps still go.
#[tokio::test]
async fn carts_older_than_the_maximum_age_are_not_mailed() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let old = capture(&m.app, "gus@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    m.app.clock.advance(Duration::days(3));
    let recent = capture(&m.app, "hal@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    // Down for five days: the first cart is now eight days abandoned, the second five.
    m.app.clock.advance(Duration::days(5));
    let report = m.dispatch().await;
    assert_eq!(report.stopped, 1);
    let stopped = m.only_run(&old).await;
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["stop_reason"], "too_old");
    // The recent cart's overdue step went out (one step per pass, 15 minutes apart).
    assert_eq!(m.only_run(&recent).await["current_step"], 1);
    let emails = outbox_emails(&m.app);
    assert_eq!(emails.len(), 1);
    assert!(header(&emails[0].1, "To")
        .unwrap()
        .contains("hal@example.com"));
}

/// `POST /recovery/runs/{id}/stop` ends a run; the dispatcher sends nothing for it.
#[tokio::test]
async fn an_admin_can_stop_a_run() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let cart = capture(&m.app, "ida@example.com").await;
    m.app.clock.advance(Duration::minutes(31));
    m.settle().await;
    let run_id = m.only_run(&cart).await["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = m
        .app
        .post(
            &format!("/ocart/v1/recovery/runs/{run_id}/stop"),
            Some(&m.app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "stopped");
    // Processors are off here: project before the next authenticated request.
    m.project().await;
    let (status, _) = m
        .app
        .post(
            "/ocart/v1/recovery/runs/nope/stop",
            Some(&m.app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 404);
    m.app.clock.advance(Duration::hours(2));
    assert_eq!(m.dispatch().await.sent, 0);
    let run = m.only_run(&cart).await;
    assert_eq!(run["stop_reason"], "manual");
    assert!(outbox_emails(&m.app).is_empty());
    let (status, page) = m
        .app
        .admin_get("/ocart/v1/recovery/runs?status=bogus")
        .await;
    assert_eq!(status, 422, "{page}");
}

/// A template preview renders with a sample cart; unknown tags are refused by part.
#[tokio::test]
async fn templates_preview_and_unknown_tags_are_refused() {
    let app = spawn_app(Kind::Sqlite).await;
    let (status, body) = app
        .post(
            "/ocart/v1/recovery/templates/recovery_email_3/preview",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["rendered"]["html"]
        .as_str()
        .unwrap()
        .contains("OCART-SAMPLE1"));
    assert!(body["rendered"]["subject"].as_str().unwrap().len() > 5);
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/templates/custom/preview",
            Some(&app.admin),
            &json!({"template": {"subject": "Hi {{ firstname }}", "html": "<p>{{ restore_url }}</p>", "text": "{{ restore_url }}"}}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "template.subject");
    assert!(problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("firstname"));
}

/// `ocart recovery …` against a server's database: sequences, a dry run that explains each
/// due run, a real dispatch pass, the runs and the outbox.
#[tokio::test]
async fn the_recovery_cli_lists_dispatches_and_shows_the_outbox() {
    let m = Manual::start(Kind::Sqlite, |c| c.recovery.outbox_dir = None).await;
    let app = &m.app;
    let (code, out, err) = ocart_tests::ocart(&app.db, &["recovery", "sequence", "list"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("default"), "{out}");
    assert!(out.contains("email +45m recovery_email_1"), "{out}");
    assert!(out.contains("+4320m recovery_email_3 (coupon)"), "{out}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &[
            "recovery",
            "sequence",
            "create",
            "--name",
            "Bad",
            "--steps",
            r#"[{"channel":"email","delay_min":-1,"template":""}]"#,
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("steps[0].template"), "{err}");
    assert!(err.contains("steps[0].delay_min"), "{err}");

    // Two carts of one shopper, abandoned two hours ago (the CLI runs on the wall clock).
    app.clock.set(chrono::Utc::now() - Duration::hours(2));
    let first = capture(app, "ann@example.com").await;
    let second = capture(app, "ann@example.com").await;
    for cart in [&first, &second] {
        // Processors are off: project before each authenticated request.
        m.project().await;
        let (status, body) = app
            .post(
                &format!("/ocart/v1/carts/{cart}/abandon"),
                Some(&app.admin),
                &json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    m.settle().await;
    let (code, out, err) =
        ocart_tests::ocart(&app.db, &["recovery", "dispatch", "--dry-run", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let planned: Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = planned
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 2, "{out}");
    assert!(
        actions.contains(&"send") && actions.contains(&"stop"),
        "{out}"
    );
    let stop = planned
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["action"] == "stop")
        .unwrap();
    assert_eq!(stop["reason"], "quiet_period");
    assert!(outbox_emails(app).is_empty(), "a dry run sends nothing");

    let (code, out, err) = ocart_tests::ocart(&app.db, &["recovery", "dispatch"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sent 1,"), "{out}");
    assert!(out.contains("stopped 1,"), "{out}");
    let (code, out, _) = ocart_tests::ocart(&app.db, &["recovery", "outbox"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("email"), "{out}");
    assert!(out.contains("ann@example.com"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
    let (code, out, _) =
        ocart_tests::ocart(&app.db, &["recovery", "runs", "--status", "stopped"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("stopped (quiet_period)"), "{out}");

    // The suppression list: add stops the shopper's open run; remove allows them again.
    let (code, out, err) = ocart_tests::ocart(
        &app.db,
        &[
            "recovery",
            "suppression",
            "add",
            "Ann@Example.com",
            "--reason",
            "complaint",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("suppressed "), "{out}");
    let (code, out, _) =
        ocart_tests::ocart(&app.db, &["recovery", "runs", "--status", "pending"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "no recovery runs", "{out}");
    let (code, out, _) = ocart_tests::ocart(&app.db, &["recovery", "suppression", "list"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("complaint"), "{out}");
    assert!(!out.contains("ann@example.com"), "{out}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &[
            "recovery",
            "suppression",
            "add",
            "nobody",
            "--reason",
            "manual",
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("not an email address"), "{err}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &["recovery", "suppression", "remove", "ann@example.com"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = ocart_tests::ocart(
        &app.db,
        &["recovery", "suppression", "remove", "ann@example.com"],
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("is not suppressed"), "{err}");
}

/// The unsubscribe link: GET shows a confirmation and changes nothing; the one-click POST
/// (RFC 8058) suppresses the recipient and stops their runs; later carts are not mailed.
async fn unsubscribe(kind: Kind) {
    let m = Manual::start(kind, |_| {}).await;
    let app = &m.app;
    let cart = capture(app, "ann@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    let emails = outbox_emails(app);
    let list_unsubscribe = header(&emails[0].1, "List-Unsubscribe").unwrap().to_owned();
    let url = list_unsubscribe
        .split(['<', '>'])
        .find(|p| p.starts_with("https://"))
        .unwrap();
    let path = url.strip_prefix("https://ocart.shop.test").unwrap();
    assert!(path.starts_with("/u/"), "{path}");

    // A GET (a link scanner, or the shopper's click) only asks.
    let page = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    m.project().await;
    assert_eq!(m.only_run(&cart).await["status"], "pending");

    // Tampered and unknown tokens: a friendly page, nothing recorded.
    for bad in [
        "/u/nope",
        "/u/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &format!("{path}x"),
    ] {
        let resp = app.client.post(app.url(bad)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{bad}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("This link is not valid"), "{body}");
    }

    // A second cart of the shopper, captured before they unsubscribe.
    let second = capture(app, "ann@example.com").await;
    // The one-click POST a mail client sends.
    for _ in 0..2 {
        let resp = app
            .client
            .post(app.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert!(resp.text().await.unwrap().contains("You are unsubscribed"));
    }
    m.project().await;
    let run = m.only_run(&cart).await;
    assert_eq!(run["status"], "stopped");
    assert_eq!(run["stop_reason"], "unsubscribed");
    assert_eq!(events_of(app, "recovery/unsubscribed").await.len(), 1);
    let (_, list) = app.admin_get("/ocart/v1/recovery/suppression").await;
    assert_eq!(list["suppression"][0]["reason"], "unsubscribe");
    assert_eq!(list["suppression"][0]["channel"], "email");

    // The second cart, abandoned after the unsubscribe, is not mailed: the guard stops it.
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    let report = m.dispatch().await;
    assert_eq!((report.sent, report.stopped), (0, 1));
    assert_eq!(m.only_run(&second).await["stop_reason"], "suppressed");
    assert_eq!(outbox_emails(app).len(), 1);

    // And the shopper is not tracked again, though the answer does not say so (capture is no
    // suppression oracle: it answers as for any shopper).
    let (status, reply) = app
        .capture(&capture_body(&session(), "ann@example.com", 1))
        .await;
    assert_eq!(status, 202);
    assert_eq!(reply["captured"], true);
    assert_eq!(reply["status"], "active");
    let kept = app
        .core
        .log
        .load("cart", reply["cart_id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(kept.is_empty(), "the unsubscribed shopper's cart is not kept");
}

#[tokio::test]
async fn postgres_one_click_unsubscribe_suppresses_and_stops_every_run() {
    unsubscribe(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_one_click_unsubscribe_suppresses_and_stops_every_run() {
    unsubscribe(Kind::Sqlite).await;
}

/// The suppression list through the API: add, list, remove; bad recipients are refused.
#[tokio::test]
async fn the_suppression_list_is_managed_through_the_api() {
    let app = spawn_app(Kind::Sqlite).await;
    let (status, added) = app
        .post(
            "/ocart/v1/recovery/suppression",
            Some(&app.admin),
            &json!({"recipient": "Zed@Example.com", "reason": "complaint"}),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    let hash = added["recipient_hash"].as_str().unwrap().to_owned();
    assert_eq!(hash.len(), 64);
    let list = app
        .eventually("/ocart/v1/recovery/suppression", |b| {
            b["suppression"].as_array().is_some_and(|s| s.len() == 1)
        })
        .await;
    assert_eq!(list["suppression"][0]["reason"], "complaint");
    assert_eq!(list["suppression"][0]["recipient_hash"], hash.as_str());
    assert!(!list.to_string().contains("zed@example.com"));
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/suppression",
            Some(&app.admin),
            &json!({"recipient": "not an address"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "recipient");
    let delete = |query: String| {
        let request = app
            .client
            .delete(app.url(&format!("/ocart/v1/recovery/suppression?{query}")))
            .bearer_auth(&app.admin);
        async move { ocart_tests::read(request.send().await.unwrap()).await }
    };
    let (status, body) = delete("recipient=zed%40example.com".into()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["suppressed"], false);
    let (status, _) = delete(format!("recipient_hash={hash}")).await;
    assert_eq!(status, 404);
    app.eventually("/ocart/v1/recovery/suppression", |b| {
        b["suppression"].as_array().is_some_and(|s| s.is_empty())
    })
    .await;
}

/// A Twilio-compatible SMS API for tests: records each request (path, headers, form body) and
/// answers 201 with a message resource, or `status` when set.
async fn sms_api(
    status: u16,
) -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>> = Default::default();
    let store = seen.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(socket);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        reader.read_line(&mut line).await.unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        headers.push_str(&line);
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).await.unwrap();
                    store.lock().unwrap().push((
                        request_line.trim().to_owned(),
                        headers,
                        String::from_utf8(body).unwrap(),
                    ));
                    let reply = if status == 201 {
                        r#"{"sid":"SM1","status":"queued"}"#
                    } else {
                        r#"{"code":21211,"message":"The 'To' number is not a valid phone number."}"#
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        reply.len()
                    );
                    let socket = reader.get_mut();
                    socket.write_all(head.as_bytes()).await.unwrap();
                    socket.write_all(reply.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (port, seen)
}

/// An SMS step goes to a Twilio-compatible API as a form POST with basic auth, with the
/// unsubscribe instruction appended; a 4xx answer is recorded as a failed attempt.
async fn sms_step(status: u16) {
    let (port, seen) = sms_api(status).await;
    let m = Manual::start(Kind::Sqlite, |c| {
        c.sms.transport = "twilio".into();
        c.sms.base_url = format!("http://127.0.0.1:{port}");
        c.sms.account_sid = "AC123".into();
        c.sms.auth_token = "secret-token".into();
        c.sms.from = "+15005550006".into();
    })
    .await;
    let app = &m.app;
    m.project().await;
    let resp = app
        .client
        .delete(app.url("/ocart/v1/recovery/sequences/default"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    m.project().await;
    let (status_code, body) = app
        .post(
            "/ocart/v1/recovery/sequences",
            Some(&app.admin),
            &json!({"name": "SMS", "trigger_type": "cart_abandoned", "steps": [
                {"channel": "sms", "delay_min": 15, "template": "sms_1"}]}),
        )
        .await;
    assert_eq!(status_code, 201, "{body}");
    m.project().await;
    let cart = capture(app, "sam@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(15));
    let report = m.dispatch().await;
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (line, headers, form) = &requests[0];
    assert_eq!(
        line,
        "POST /2010-04-01/Accounts/AC123/Messages.json HTTP/1.1"
    );
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("AC123:secret-token");
    assert!(
        headers.to_ascii_lowercase().contains(&format!(
            "authorization: basic {}",
            basic.to_ascii_lowercase()
        )),
        "{headers}"
    );
    assert!(
        headers.contains("application/x-www-form-urlencoded"),
        "{headers}"
    );
    let fields: std::collections::HashMap<String, String> =
        url_decode_form(form).into_iter().collect();
    assert_eq!(fields["To"], "+14155550123");
    assert_eq!(fields["From"], "+15005550006");
    assert!(fields["Body"].contains("Mug Store"), "{form}");
    assert!(
        fields["Body"].contains("Reply STOP to opt out: https://ocart.shop.test/u/"),
        "{form}"
    );
    let run = m.only_run(&cart).await;
    if status == 201 {
        assert_eq!(report.sent, 1);
        assert_eq!(run["status"], "stopped");
        assert_eq!(run["stop_reason"], "completed");
    } else {
        assert_eq!(report.failed, 1);
        let failed = events_of(app, "recovery/failed").await;
        assert!(
            failed[0]["error"].as_str().unwrap().contains("400"),
            "{failed:?}"
        );
        assert_eq!(run["status"], "pending");
    }
}

fn url_decode_form(form: &str) -> Vec<(String, String)> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(raw: &str) -> String {
    let bytes = raw.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn an_sms_step_goes_to_a_twilio_compatible_api() {
    sms_step(201).await;
}

#[tokio::test]
async fn a_refused_sms_is_recorded_as_a_failed_attempt() {
    sms_step(400).await;
}

/// Test mode: the trigger makes a dummy abandoned cart whose first email goes out about 30
/// seconds later; without test mode it is refused.
#[tokio::test]
async fn the_test_mode_trigger_mails_a_dummy_cart_within_thirty_seconds() {
    let app = spawn_app(Kind::Sqlite).await;
    let trigger = json!({"email": "owner@shop.test"});
    let (status, problem) = app
        .post(
            "/ocart/v1/recovery/test/trigger",
            Some(&app.admin),
            &trigger,
        )
        .await;
    assert_eq!(status, 409, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("test_mode"));
    let resp = app
        .client
        .patch(app.url("/ocart/v1/settings"))
        .bearer_auth(&app.admin)
        .json(&json!({"recovery": {"test_mode": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (status, flow) = app
        .post(
            "/ocart/v1/recovery/test/trigger",
            Some(&app.admin),
            &trigger,
        )
        .await;
    assert_eq!(status, 201, "{flow}");
    let cart = flow["cart_id"].as_str().unwrap().to_owned();
    run_of(&app, &cart, |r| r["status"] == "pending").await;
    app.settle().await;
    assert!(outbox_emails(&app).is_empty());
    app.clock.advance(Duration::seconds(30));
    let emails = wait_for_emails(&app, 1).await;
    assert_eq!(emails.len(), 1);
    assert!(emails[0].1.contains("owner@shop.test"));
    assert_eq!(
        run_of(&app, &cart, |r| r["current_step"] == 1).await["status"],
        "pending"
    );
    let (status, _) = app
        .post(
            "/ocart/v1/recovery/test/trigger",
            Some(&app.admin),
            &json!({"email": "nope"}),
        )
        .await;
    assert_eq!(status, 422);
}

/// Retention: carts past `recovery.cart_retention_days` expire and their shoppers' personal
/// data is erased (unless the shopper has a newer cart); the deliverability feed keeps
/// `recovery.deliverability_days`.
async fn retention(kind: Kind) {
    let m = Manual::start(kind, |_| {}).await;
    let app = &m.app;
    let retention = ocart_processors::Retention::new(
        app.core.log.clone(),
        app.core.vault.clone(),
        app.clock.clone(),
    );
    let ann = capture(app, "ann@example.com").await;
    let bob_old = capture(app, "bob@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 2);
    app.clock.advance(Duration::days(85));
    let bob_new = capture(app, "bob@example.com").await;
    app.clock.advance(Duration::days(6));
    m.project().await;

    let pruned = retention.prune().await.unwrap();
    assert_eq!(pruned.deliverability_rows, 0);
    assert_eq!(pruned.carts_expired, 2, "{pruned:?}");
    // Ann's email; the phone all test carts share stays (Bob's new cart holds it).
    assert_eq!(pruned.subjects_erased, 1, "{pruned:?}");
    m.project().await;
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{ann}")).await;
    assert_eq!(cart["status"], "expired");
    assert_eq!(cart["erased"], true);
    assert!(cart["email"].is_null());
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{bob_old}")).await;
    assert_eq!(cart["status"], "expired");
    assert_eq!(cart["email"], "bob@example.com");
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{bob_new}")).await;
    assert_eq!(cart["status"], "active");
    assert_eq!(events_of(app, "privacy/subject_erased").await.len(), 1);
    // A second pass has nothing to do.
    assert_eq!(retention.prune().await.unwrap(), Default::default());

    // Half a year on: the feed is pruned and Bob's data goes too.
    app.clock.advance(Duration::days(120));
    m.project().await;
    let pruned = retention.prune().await.unwrap();
    assert!(pruned.deliverability_rows >= 2, "{pruned:?}");
    assert_eq!(pruned.carts_expired, 1);
    assert_eq!(pruned.subjects_erased, 2);
    m.project().await;
    let (_, feed) = app.admin_get("/ocart/v1/recovery/deliverability").await;
    assert_eq!(feed["events"], json!([]));
    let (_, cart) = app.admin_get(&format!("/ocart/v1/carts/{bob_new}")).await;
    assert_eq!(cart["erased"], true);
}

#[tokio::test]
async fn postgres_retention_expires_old_carts_erases_their_shoppers_and_prunes_the_feed() {
    retention(Kind::Postgres).await;
}

#[tokio::test]
async fn sqlite_retention_expires_old_carts_erases_their_shoppers_and_prunes_the_feed() {
    retention(Kind::Sqlite).await;
}

async fn put_template(app: &TestApp, id: &str, body: &Value) -> (u16, Value) {
    let resp = app
        .client
        .put(app.url(&format!("/ocart/v1/recovery/templates/{id}")))
        .bearer_auth(&app.admin)
        .json(body)
        .send()
        .await
        .unwrap();
    ocart_tests::read(resp).await
}

/// A template saved under a step's name is what that step sends; unknown merge tags are
/// refused when the template is saved, naming the part; deleting it brings the built-in back.
#[tokio::test]
async fn saved_templates_are_checked_at_save_and_used_at_send() {
    let m = Manual::start(Kind::Sqlite, |_| {}).await;
    let app = &m.app;
    let (status, problem) = put_template(
        app,
        "recovery_email_1",
        &json!({"subject": "Hi {{ first_name }}", "html": "<p>{{ restore_url }}</p>",
                "text": "{{ restore_url }} {{ discount }}"}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["subject", "text"]);
    assert!(problem["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("first_name"));
    let (status, problem) = put_template(
        app,
        "Bad Name",
        &json!({"subject": "x", "html": "", "text": ""}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");

    let custom = json!({
        "subject": "{{ store_name }} kept your cart, {{ customer_first_name }}",
        "preheader": "Back in one click",
        "html": "<html><body><span>{{ preheader }}</span><p>Total {{ cart_total }}</p><a href=\"{{ restore_url }}\">Back</a></body></html>",
        "text": "Total {{ cart_total }}: {{ restore_url }}"
    });
    let (status, saved) = put_template(app, "recovery_email_1", &custom).await;
    assert_eq!(status, 200, "{saved}");
    m.project().await;
    let (_, list) = app.admin_get("/ocart/v1/recovery/templates").await;
    let first = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["template_id"] == "recovery_email_1")
        .unwrap()
        .clone();
    assert_eq!(first["source"], "saved");
    assert!(list["merge_tags"]
        .as_array()
        .unwrap()
        .contains(&json!("coupon_code")));
    let (_, preview) = app
        .post(
            "/ocart/v1/recovery/templates/recovery_email_1/preview",
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert!(preview["rendered"]["html"]
        .as_str()
        .unwrap()
        .contains("<span>Back in one click</span>"));

    capture(app, "ann@example.com").await;
    app.clock.advance(Duration::minutes(31));
    m.settle().await;
    app.clock.advance(Duration::minutes(45));
    assert_eq!(m.dispatch().await.sent, 1);
    let eml = &outbox_emails(app)[0].1;
    assert!(
        header(eml, "Subject")
            .unwrap()
            .contains("Mug Store kept your cart, Ann"),
        "{eml}"
    );

    let resp = app
        .client
        .delete(app.url("/ocart/v1/recovery/templates/recovery_email_1"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    m.project().await;
    let (_, shown) = app
        .admin_get("/ocart/v1/recovery/templates/recovery_email_1")
        .await;
    assert_eq!(shown["source"], "builtin");
    let resp = app
        .client
        .delete(app.url("/ocart/v1/recovery/templates/recovery_email_1"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
