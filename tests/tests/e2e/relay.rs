//! The outbox relay to NATS JetStream and the processor lease (ADR 0005), against real
//! PostgreSQL, SQLite and a nats-server of each test's own.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use ocart_processors::{Relay, STREAM_NAME};
use ocart_projections::{load_checkpoint, Db, EventLog, NewEvent, Outcome};
use ocart_tests::{FreshDb, Kind, NatsServer};
use serde_json::{json, Value};
use tokio::sync::watch;
use uuid::Uuid;

/// Appends `count` `test/ping` events to one new aggregate, one append per event.
async fn append_pings(log: &EventLog, count: usize, pause: Duration) -> Vec<Uuid> {
    let aggregate_id = Uuid::new_v4().to_string();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let event_id = Uuid::new_v4();
        log.append(vec![NewEvent {
            event_id,
            aggregate_type: "test".into(),
            aggregate_id: aggregate_id.clone(),
            sequence: i as i64 + 1,
            event_type: "test/ping".into(),
            event_version: "1".into(),
            payload: json!({ "n": i }),
            metadata: json!({
                "event_id": event_id.to_string(),
                "occurred_at": chrono::Utc::now().to_rfc3339(),
            }),
        }])
        .await
        .expect("append");
        ids.push(event_id);
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    ids
}

/// Appends `tasks × per_task` events from concurrent tasks.
async fn append_concurrently(log: &EventLog, tasks: usize, per_task: usize) -> Vec<Uuid> {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move { append_pings(&log, per_task, Duration::ZERO).await })
        })
        .collect();
    let mut ids = Vec::new();
    for handle in handles {
        ids.extend(handle.await.expect("append task"));
    }
    ids
}

/// One message as a consumer sees it.
struct Received {
    subject: String,
    msg_id: Option<String>,
    body: Value,
}

/// Reads everything on `ocart.test.>` with a new durable pull consumer, acking each message.
async fn consume_all(nats_url: &str, durable: &str) -> Vec<Received> {
    consume_subject(nats_url, durable, "ocart.test.>").await
}

/// Reads everything on `filter` with a new durable pull consumer, acking each message.
async fn consume_subject(nats_url: &str, durable: &str, filter: &str) -> Vec<Received> {
    let client = async_nats::connect(nats_url)
        .await
        .expect("connect to NATS");
    let js = jetstream::new(client);
    let stream = js
        .get_stream(STREAM_NAME)
        .await
        .expect("the relay created the stream");
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: filter.into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create consumer");
    let mut received = Vec::new();
    loop {
        let mut batch = consumer
            .batch()
            .max_messages(500)
            .expires(Duration::from_millis(1500))
            .messages()
            .await
            .expect("pull a batch");
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.expect("message");
            received.push(Received {
                subject: message.subject.to_string(),
                msg_id: message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_owned()),
                body: serde_json::from_slice(&message.payload).expect("a JSON envelope"),
            });
            message.ack().await.expect("ack");
            got += 1;
        }
        if got == 0 {
            return received;
        }
    }
}

fn event_id_of(received: &Received) -> Uuid {
    received.body["event_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("event_id in the envelope")
}

/// Whether the relay has published everything now in the log (per its stored checkpoint).
async fn relay_caught_up(log: &EventLog) -> bool {
    let at = load_checkpoint(log.db(), "nats_relay")
        .await
        .expect("checkpoint");
    log.read_after(at, 1).await.expect("read").is_empty()
}

async fn durable_consumer_receives_every_event_once(kind: Kind) {
    let nats = NatsServer::start();
    let fresh = FreshDb::new(kind).await;
    let db = fresh.connect().await;
    let log = EventLog::open(db.clone()).await.expect("open the log");

    let appended = append_concurrently(&log, 50, 10).await;
    assert_eq!(appended.len(), 500);

    let relay = Relay::connect(log.clone(), &nats.url())
        .await
        .expect("relay connects")
        .with_batch_size(64);
    let mut published = 0;
    // Drive the relay by hand until it has published all 500 (bounded). On a shared
    // PostgreSQL server a committed event is readable only once no older transaction is open
    // anywhere on the server, so one pass may find nothing yet.
    for _ in 0..500 {
        match relay.try_handle_next().await.expect("relay step") {
            Outcome::Processed(n) => published += n,
            _ if published >= 500 => break,
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert_eq!(published, 500);
    assert!(
        relay_caught_up(&log).await,
        "the stored checkpoint is at the end of the log"
    );
    assert_eq!(
        relay.checkpoint(),
        load_checkpoint(&db, "nats_relay").await.unwrap()
    );
    // Nothing is published twice by the relay itself: another step finds nothing.
    assert_eq!(relay.try_handle_next().await.unwrap(), Outcome::Idle);

    let received = consume_all(&nats.url(), "relay_test_a").await;
    assert_eq!(received.len(), 500, "every event exactly once");
    let ids: HashSet<Uuid> = received.iter().map(event_id_of).collect();
    assert_eq!(ids, appended.iter().copied().collect::<HashSet<_>>());
    for message in &received {
        assert_eq!(message.subject, "ocart.test.ping");
        assert_eq!(
            message.msg_id.as_deref(),
            message.body["event_id"].as_str(),
            "Nats-Msg-Id is the event id"
        );
        assert_eq!(message.body["type"], "test/ping");
        assert_eq!(message.body["version"], "1");
        assert_eq!(message.body["aggregate_type"], "test");
        assert!(message.body["sequence"]
            .as_i64()
            .is_some_and(|s| (1..=10).contains(&s)));
        assert!(message.body["global_position"]
            .as_i64()
            .is_some_and(|p| p > 0));
        assert!(message.body["occurred_at"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
        assert_eq!(
            message.body["occurred_at"],
            message.body["metadata"]["occurred_at"]
        );
        assert!(message.body["payload"]["n"].is_number());
    }
    drop(log);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_receives_every_event_once_postgres() {
    durable_consumer_receives_every_event_once(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_receives_every_event_once_sqlite() {
    durable_consumer_receives_every_event_once(Kind::Sqlite).await;
}

async fn events_survive_a_nats_outage(kind: Kind) {
    let mut nats = NatsServer::start();
    let fresh = FreshDb::new(kind).await;
    let db = fresh.connect().await;
    let log = EventLog::open(db.clone()).await.expect("open the log");

    let relay = Relay::connect(log.clone(), &nats.url())
        .await
        .expect("relay connects")
        .with_batch_size(32);
    let relayed = relay.watch();
    let (stop_tx, stop) = watch::channel(false);
    let running = tokio::spawn(ocart_processors::supervisor::run(
        relay.with_poll(Duration::from_millis(200)),
        stop,
    ));

    // A burst from a few writers, with the server killed part-way and restarted a second later.
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            tokio::spawn(async move { append_pings(&log, 150, Duration::from_millis(10)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_outage = log.stats().await.unwrap().0;
    tokio::task::block_in_place(|| nats.stop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled_at = *relayed.borrow();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during_outage = log.stats().await.unwrap().0;
    // Without acks the relay cannot move its checkpoint.
    assert_eq!(
        *relayed.borrow(),
        stalled_at,
        "the checkpoint stays put while NATS is down"
    );
    tokio::task::block_in_place(|| nats.restart());
    let mut appended = Vec::new();
    for writer in writers {
        appended.extend(writer.await.expect("writer"));
    }
    assert_eq!(appended.len(), 600);
    assert!(
        during_outage > before_outage,
        "events were appended while NATS was down"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !relay_caught_up(&log).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the relay did not catch up within 30 s after the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the relay stops")
        .expect("relay task");

    let received = consume_all(&nats.url(), "relay_test_b").await;
    let raw = received.len();
    let unique: HashSet<Uuid> = received.iter().map(event_id_of).collect();
    let expected: HashSet<Uuid> = appended.iter().copied().collect();
    let missing = expected.difference(&unique).count();
    println!(
        "{kind:?}: appended {} ({} before the outage, {} by its end; relay stalled at position {}), \
         received {raw} messages, {} unique, {missing} missing",
        expected.len(),
        before_outage,
        during_outage,
        stalled_at.position,
        unique.len()
    );
    assert_eq!(missing, 0, "no event is lost");
    assert_eq!(unique, expected);
    assert_eq!(unique.len(), appended.len());
    assert_eq!(
        raw,
        unique.len(),
        "Nats-Msg-Id de-duplication leaves no event twice on the stream"
    );
    for message in &received {
        assert_eq!(message.msg_id.as_deref(), message.body["event_id"].as_str());
    }
    drop(log);
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_nats_outage_postgres() {
    events_survive_a_nats_outage(Kind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_a_nats_outage_sqlite() {
    events_survive_a_nats_outage(Kind::Sqlite).await;
}

async fn only_one_instance_holds_a_lease(kind: Kind) {
    let fresh = FreshDb::new(kind).await;
    let db: Db = fresh.connect().await;
    let name = format!("processors-{}", Uuid::new_v4().simple());

    let first = ocart_processors::try_acquire(&db, &name, "instance-a")
        .await
        .unwrap()
        .expect("the first instance takes the lease");
    assert!(first.is_held());
    assert!(
        ocart_processors::try_acquire(&db, &name, "instance-b")
            .await
            .unwrap()
            .is_none(),
        "a second instance cannot take a held lease"
    );
    // Another lease name is independent.
    let other = ocart_processors::try_acquire(&db, &format!("{name}-other"), "instance-b")
        .await
        .unwrap();
    assert!(other.is_some());

    first.release().await;
    let second = ocart_processors::try_acquire(&db, &name, "instance-b")
        .await
        .unwrap()
        .expect("free after release");
    assert!(second.is_held());
    assert!(ocart_processors::try_acquire(&db, &name, "instance-a")
        .await
        .unwrap()
        .is_none());

    // Dropping the guard frees the lease too; a waiting instance then gets it.
    let (_stop_tx, stop) = watch::channel(false);
    let waiter = {
        let db = db.clone();
        let name = name.clone();
        tokio::spawn(async move {
            ocart_processors::wait_acquire(
                &db,
                &name,
                "instance-c",
                stop,
                Duration::from_millis(50),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter waits while the lease is held"
    );
    drop(second);
    let third = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter gets the lease after the drop")
        .unwrap()
        .expect("a lease");
    assert!(third.is_held());

    // A stop request ends a wait.
    let (stop_tx, stop) = watch::channel(false);
    let waiter = {
        let db = db.clone();
        let name = name.clone();
        tokio::spawn(async move {
            ocart_processors::wait_acquire(
                &db,
                &name,
                "instance-d",
                stop,
                Duration::from_millis(50),
            )
            .await
        })
    };
    stop_tx.send_replace(true);
    assert!(tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .is_none());

    third.release().await;
    if let Some(other) = other {
        other.release().await;
    }
    db.close().await;
}

#[tokio::test]
async fn only_one_instance_holds_a_lease_postgres() {
    only_one_instance_holds_a_lease(Kind::Postgres).await;
}

#[tokio::test]
async fn only_one_instance_holds_a_lease_sqlite() {
    only_one_instance_holds_a_lease(Kind::Sqlite).await;
}

/// The whole server with NATS configured: a capture reaches a durable consumer as
/// `ocart.cart.created`, de-duplicable by `Nats-Msg-Id`, with personal data still sealed.
#[tokio::test]
async fn the_server_streams_its_events_to_jetstream() {
    let nats = NatsServer::start();
    let url = nats.url();
    let app = ocart_tests::spawn_app_with(Kind::Postgres, |c| c.nats_url = Some(url.clone())).await;
    let (status, reply) = app
        .capture(&ocart_tests::capture_body(
            &ocart_tests::session(),
            "stream@example.com",
            2,
        ))
        .await;
    assert_eq!(status, 202);
    let cart_id = reply["cart_id"].as_str().unwrap().to_owned();
    let info = app
        .eventually("/ocart/v1/info", |i| {
            i["nats"] == true
                && i["projections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "nats_relay" && p["lag"] == 0)
        })
        .await;
    assert_eq!(info["nats"], true);
    let received = consume_subject(&url, "app-test", "ocart.cart.>").await;
    assert_eq!(received.len(), 1, "one cart event");
    let message = &received[0];
    assert_eq!(message.subject, "ocart.cart.created");
    assert_eq!(message.body["type"], "cart/created");
    assert_eq!(message.body["aggregate_id"], cart_id.as_str());
    assert_eq!(message.msg_id.as_deref(), message.body["event_id"].as_str());
    assert!(message.body["global_position"].as_i64().unwrap() > 0);
    assert!(message.body["metadata"]["hash"].is_string());
    assert!(
        !message.body.to_string().contains("stream@example.com"),
        "personal data stays sealed on the stream"
    );
    assert!(message.body["payload"]["email"]["sealed"]["ct"].is_string());
}
