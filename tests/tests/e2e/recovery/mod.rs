//! Abandoned-cart recovery through HTTP, on a manual clock: sequences, runs, the dispatcher
//! and its guards, over the outbox and a real SMTP conversation with an in-test SMTP server.

mod cli;
mod dispatchers;
mod guards;
mod retention;
mod schedule;
mod sequences;
mod sms;
mod templates;
mod test_mode;
mod unsubscribe_and_suppression;

use ocart_tests::{capture_body, outbox_emails, session, spawn_app_with, Kind, TestApp};
use serde_json::Value;

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
    /// Then the recovery follow-ups (a buyer's other runs stopped, a bounce suppressed), and
    /// the projections again while they append.
    pub(crate) async fn project(&self) {
        let _one = self.projecting.lock().await;
        let followups = ocart_processors::recovery::RecoveryFollowUps::new(
            self.app.core.log.clone(),
            self.app.clock.clone(),
            self.app.core.projector_names(),
        );
        loop {
            self.project_to_head().await;
            if followups.catch_up().await.unwrap() == 0 {
                return;
            }
        }
    }

    async fn project_to_head(&self) {
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
            self.app.core.projector_names(),
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
