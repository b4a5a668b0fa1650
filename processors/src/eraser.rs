//! The follow-up of every erasure: a process manager that deletes the data key of each subject
//! an event erases (`cart/consent_withdrawn`, `privacy/subject_erased` from an erasure request
//! or from retention).
//!
//! Every entry point does the same, in one order: it records the erasure in the log first (so
//! the projections blank the read tables, live and on rebuild), then deletes the key itself
//! before it answers. A crash between the two leaves an erasure in the log whose key still
//! exists; this processor, checkpointed, deletes it when it reaches the event, so no crash can
//! leave erased data readable. Deleting a key twice is a no-op, and a key created after the
//! erasure was recorded (the subject came back with new consent) is left alone.

use std::time::Duration;

use async_trait::async_trait;
use ocart_domain::cart::CartEvent;
use ocart_domain::subject::SubjectEvent;
use ocart_domain::SubjectHash;
use ocart_projections::{decode_event, EventLog, Outcome, StoredEvent, Vault};
use tokio::sync::watch;

use crate::follow::{Horizon, LogFollower};
use crate::supervisor::{LogWaker, Next, Processor, DEFAULT_POLL};

/// The eraser's name and checkpoint.
pub const ERASER: &str = "privacy_eraser";

/// Events read per step.
const BATCH: i64 = 2_000;

/// How long the eraser lets events gather after a wake-up (it is the crash backstop: every
/// entry point has already deleted the key before it answered).
const GATHER: Duration = Duration::from_millis(250);

pub struct Eraser {
    log: EventLog,
    vault: Vault,
    follower: LogFollower,
    waker: LogWaker,
}

impl Eraser {
    pub fn new(log: EventLog, vault: Vault) -> Self {
        Self {
            waker: LogWaker::new(&log, DEFAULT_POLL),
            // It reads no read table: the whole log, as far as it goes.
            follower: LogFollower::new(&log, ERASER, Horizon::Log, BATCH),
            log,
            vault,
        }
    }

    /// The longest wait for new events when no wake-up comes (writers in other processes).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.waker = LogWaker::new(&self.log, poll);
        self
    }

    /// Deletes the keys of the subjects erased by the next batch of events, then moves the
    /// checkpoint past them.
    pub async fn try_handle_next(&self) -> anyhow::Result<Outcome> {
        let events = self.follower.next_batch().await?;
        if events.is_empty() {
            return Ok(Outcome::Idle);
        }
        for event in &events {
            for subject in erased_subjects(event)? {
                // Only the key the erasure covered: one the subject got after the erasure was
                // recorded (a later capture with new consent) stays.
                self.vault
                    .erase_if_created_by(&subject, event.recorded_at)
                    .await?;
            }
        }
        self.follower.handled(&events).await?;
        Ok(Outcome::Processed(events.len()))
    }
}

/// The subjects an event erases (none for most events). An erasure event that cannot be read
/// is an error naming it: skipping it could leave a key that should be gone.
fn erased_subjects(event: &StoredEvent) -> anyhow::Result<Vec<SubjectHash>> {
    let unreadable = |e: serde_json::Error| {
        anyhow::anyhow!(
            "the {} event at global position {} cannot be read: {e}",
            event.event_type,
            event.global_position
        )
    };
    Ok(match event.event_type.as_str() {
        "cart/consent_withdrawn" => {
            match decode_event::<CartEvent>(&event.event_type, &event.payload)
                .map_err(unreadable)?
            {
                CartEvent::ConsentWithdrawn { subjects, .. } => subjects,
                _ => Vec::new(),
            }
        }
        "privacy/subject_erased" => {
            let SubjectEvent::Erased { subject, .. } =
                decode_event::<SubjectEvent>(&event.event_type, &event.payload)
                    .map_err(unreadable)?;
            vec![subject]
        }
        _ => Vec::new(),
    })
}

#[async_trait]
impl Processor for Eraser {
    fn name(&self) -> &'static str {
        ERASER
    }

    async fn step(&self) -> anyhow::Result<Next> {
        Ok(match self.try_handle_next().await? {
            Outcome::Processed(n) if n as i64 >= BATCH => Next::Now,
            Outcome::Processed(_) => Next::NewEvents,
            Outcome::Idle => Next::NewEvents,
        })
    }

    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        self.waker.wait_and_gather(GATHER, stop).await;
    }
}
