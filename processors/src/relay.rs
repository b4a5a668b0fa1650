//! The outbox relay (ADR 0005): reads the log with the global reader and publishes every event
//! to the JetStream stream `OCART_EVENTS`, moving its checkpoint only past events whose publish
//! ack has arrived. At-least-once; re-publishes within the stream's duplicate window are dropped
//! by JetStream thanks to the `Nats-Msg-Id` header (= event id).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use async_nats::HeaderMap;
use ocart_projections::{
    load_checkpoint, save_checkpoint, Checkpoint, EventLog, Outcome, StoredEvent,
};
use serde_json::value::RawValue;
use tokio::sync::{watch, Mutex};

use crate::supervisor::{LogWaker, Next, Processor, DEFAULT_POLL};

/// The JetStream stream the relay publishes to.
pub const STREAM_NAME: &str = "OCART_EVENTS";
/// The subjects of [`STREAM_NAME`].
pub const STREAM_SUBJECTS: &str = "ocart.>";
/// The relay's checkpoint name in `checkpoints`.
pub const RELAY_CHECKPOINT: &str = "nats_relay";
/// Events read and published per step, unless [`Relay::with_batch_size`] says otherwise.
pub const DEFAULT_BATCH_SIZE: i64 = 256;
/// JetStream's de-duplication window on the stream.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How long one step may take to publish a batch and collect its acks before it counts as
/// failed (and is retried from the same checkpoint).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The NATS subject of an event type: `cart/created` → `ocart.cart.created`.
pub fn subject_for(event_type: &str) -> String {
    format!("ocart.{}", event_type.replace('/', "."))
}

/// The JSON envelope the relay publishes for an event (ADR 0005). Payload and metadata are
/// the stored JSON text, forwarded verbatim (personal data still sealed).
#[derive(Debug, serde::Serialize)]
pub struct Envelope<'a> {
    pub event_id: uuid::Uuid,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub version: &'a str,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub global_position: i64,
    pub occurred_at: String,
    pub metadata: &'a RawValue,
    pub payload: &'a RawValue,
}

impl std::fmt::Display for Envelope<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| std::fmt::Error)?;
        f.write_str(&text)
    }
}

/// The envelope of `event`.
pub fn envelope(event: &StoredEvent) -> Envelope<'_> {
    let occurred_at = event
        .meta(ocart_domain::metadata::OCCURRED_AT)
        .unwrap_or_else(|| {
            event
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        });
    Envelope {
        event_id: event.event_id,
        event_type: &event.event_type,
        version: &event.event_version,
        aggregate_type: &event.aggregate_type,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        global_position: event.global_position,
        occurred_at,
        metadata: &event.metadata,
        payload: &event.payload,
    }
}

/// Publishes the log to NATS JetStream.
pub struct Relay {
    log: EventLog,
    js: jetstream::Context,
    batch_size: i64,
    /// The checkpoint, loaded on the first step and kept here afterwards. Held across a whole
    /// step so that steps never overlap.
    state: Mutex<Option<Checkpoint>>,
    /// The last checkpoint saved (or loaded), for observers.
    checkpoint: watch::Sender<Checkpoint>,
    /// The highest position relayed so far (positions are not monotonic on PostgreSQL).
    max_seen: AtomicI64,
    waker: LogWaker,
}

/// Connects to NATS (failing at once if it is unreachable) and makes sure the stream exists.
pub async fn connect(log: EventLog, nats_url: &str) -> anyhow::Result<Relay> {
    Relay::connect(log, nats_url).await
}

impl Relay {
    /// Connects to NATS (no retry of the initial connection; a 5 s connection timeout) and
    /// makes sure stream `OCART_EVENTS` (subjects `ocart.>`, file storage, 2 minute duplicate
    /// window) exists. After that, async-nats reconnects on its own.
    pub async fn connect(log: EventLog, nats_url: &str) -> anyhow::Result<Relay> {
        let client = async_nats::ConnectOptions::new()
            .name("ocart-relay")
            .connection_timeout(Duration::from_secs(5))
            .connect(nats_url)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "connecting to NATS at {}: {e}",
                    ocart_projections::redact(nats_url)
                )
            })?;
        let js = jetstream::new(client);
        Self::with_context(log, js).await
    }

    /// A relay over an existing JetStream context; makes sure the stream exists.
    pub async fn with_context(log: EventLog, js: jetstream::Context) -> anyhow::Result<Relay> {
        ensure_stream(&js).await?;
        let log_for_waker = log.clone();
        Ok(Relay {
            log,
            js,
            batch_size: DEFAULT_BATCH_SIZE,
            state: Mutex::new(None),
            checkpoint: watch::Sender::new(Checkpoint::default()),
            max_seen: AtomicI64::new(0),
            waker: LogWaker::new(&log_for_waker, DEFAULT_POLL),
        })
    }

    /// The longest wait for new events when no wake-up comes (writers in other processes).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.waker = LogWaker::new(&self.log, poll);
        self
    }

    /// Events read and published per step (at least 1).
    pub fn with_batch_size(mut self, batch_size: i64) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The JetStream context the relay publishes with.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The last checkpoint the relay saved (everything up to it has been acked by JetStream).
    /// The default checkpoint until the first step has loaded the stored one.
    pub fn checkpoint(&self) -> Checkpoint {
        *self.checkpoint.borrow()
    }

    /// A receiver of [`Relay::checkpoint`], which keeps working after [`Relay::run`] took the
    /// relay.
    pub fn watch(&self) -> watch::Receiver<Checkpoint> {
        self.checkpoint.subscribe()
    }

    /// Publishes the next batch after the checkpoint and, once every event of it is acked,
    /// saves the checkpoint past it. On any error the checkpoint stays where it was, so the
    /// next attempt publishes the batch again (JetStream drops the duplicates).
    pub async fn try_handle_next(&self) -> anyhow::Result<Outcome> {
        let mut state = self.state.lock().await;
        let at = match *state {
            Some(at) => at,
            None => {
                let at = load_checkpoint(self.log.db(), RELAY_CHECKPOINT).await?;
                *state = Some(at);
                self.checkpoint.send_replace(at);
                self.max_seen.fetch_max(at.position, Ordering::Relaxed);
                at
            }
        };
        let events = self.log.read_after(at, self.batch_size).await?;
        let Some(last) = events.last() else {
            return Ok(Outcome::Idle);
        };
        let next = last.checkpoint();

        match tokio::time::timeout(STEP_TIMEOUT, self.publish_all(&events)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err),
            Err(_) => anyhow::bail!(
                "publishing {} events took longer than {STEP_TIMEOUT:?}",
                events.len()
            ),
        }

        let mut tx = self.log.db().begin().await?;
        save_checkpoint(&mut tx, RELAY_CHECKPOINT, next).await?;
        tx.commit().await?;
        *state = Some(next);
        self.checkpoint.send_replace(next);
        let top = events.iter().map(|e| e.global_position).max().unwrap_or(0);
        self.max_seen.fetch_max(top, Ordering::Relaxed);
        metrics::counter!("ocart_relay_published_total").increment(events.len() as u64);
        Ok(Outcome::Processed(events.len()))
    }

    /// Publishes everything currently in the log; returns how many events it published.
    pub async fn catch_up(&self) -> anyhow::Result<u64> {
        let mut total = 0u64;
        while let Outcome::Processed(n) = self.try_handle_next().await? {
            total += n as u64;
        }
        Ok(total)
    }

    /// Sends every publish of the batch first, then waits for all the acks.
    async fn publish_all(&self, events: &[StoredEvent]) -> anyhow::Result<()> {
        let mut pending: Vec<PublishAckFuture> = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                event.event_id.to_string().as_str(),
            );
            let body = serde_json::to_vec(&envelope(event))?;
            let ack = self
                .js
                .publish_with_headers(subject_for(&event.event_type), headers, body.into())
                .await
                .map_err(|e| anyhow::anyhow!("publishing event {} to NATS: {e}", event.event_id))?;
            pending.push(ack);
        }
        let acks = futures::future::join_all(
            pending
                .into_iter()
                .map(std::future::IntoFuture::into_future),
        )
        .await;
        let mut failed = 0usize;
        let mut first_error = None;
        let mut stream_missing = false;
        for (event, ack) in events.iter().zip(acks) {
            if let Err(err) = ack {
                failed += 1;
                if err.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                    stream_missing = true;
                }
                first_error.get_or_insert_with(|| format!("event {}: {err}", event.event_id));
            }
        }
        if stream_missing {
            // The server lost its store (or someone deleted the stream): create it again so
            // that the retry can land.
            if let Err(err) = ensure_stream(&self.js).await {
                tracing::warn!(error = %err, "cannot re-create the NATS stream");
            }
        }
        match first_error {
            None => Ok(()),
            Some(first) => anyhow::bail!(
                "{failed} of {} publishes were not acknowledged (first: {first})",
                events.len()
            ),
        }
    }
}

#[async_trait::async_trait]
impl Processor for Relay {
    fn name(&self) -> &'static str {
        RELAY_CHECKPOINT
    }

    /// Publishes new events as they are appended (woken by the log, or every `poll` for
    /// writers in other processes). On errors (NATS down, database unavailable) the
    /// supervisor backs off and the next step starts again from the checkpoint.
    async fn step(&self) -> anyhow::Result<Next> {
        let outcome = self.try_handle_next().await.inspect_err(|_| {
            metrics::counter!("ocart_relay_errors_total").increment(1);
        })?;
        Ok(match outcome {
            Outcome::Processed(_) => Next::Now,
            // Committed but not yet readable (an older transaction is still open on
            // PostgreSQL): look again shortly.
            Outcome::Idle if self.log.head() > self.max_seen.load(Ordering::Relaxed) => {
                Next::After(Duration::from_millis(5))
            }
            Outcome::Idle => Next::NewEvents,
        })
    }

    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        self.waker.wait(stop).await;
    }
}

/// Creates stream `OCART_EVENTS` unless it exists. Only fields nats-server 2.9 knows are set.
async fn ensure_stream(js: &jetstream::Context) -> anyhow::Result<()> {
    js.get_or_create_stream(stream::Config {
        name: STREAM_NAME.to_owned(),
        subjects: vec![STREAM_SUBJECTS.to_owned()],
        storage: stream::StorageType::File,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("creating the NATS stream {STREAM_NAME}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_event_type() {
        assert_eq!(subject_for("cart/created"), "ocart.cart.created");
        assert_eq!(subject_for("cart/item_added"), "ocart.cart.item_added");
    }
}
