//! Dispatchers that crash, run two at once, and pass over many due runs.

use chrono::Duration;
use ocart_domain::recovery::RecoveryRun;
use ocart_domain::recovery::RunCommand;
use ocart_domain::Clock;
use ocart_projections::CommandMeta;
use ocart_projections::Commands;
use ocart_tests::{Kind, SmtpSink};

use super::{capture, events_of, Manual};

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
