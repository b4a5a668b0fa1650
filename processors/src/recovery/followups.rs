//! The recovery follow-ups of orders and delivery reports: a process manager that follows the
//! log, so every entry point (the order API, the WooCommerce webhook, an admin conversion over
//! HTTP or the CLI, a replayed delivery report) gets the same effect, and a crash between an
//! event and its follow-up only delays it until the restart.
//!
//! - A paid order (`order/recorded`, or `order/status_changed` to paid) stops every other open
//!   run of its buyer (`order_placed`): a buyer who has ordered is never chased. The run of the
//!   cart the order converted is left to the recovery opener, which credits it.
//! - A delivery report that suppresses (`report_suppresses`: a hard bounce, a complaint)
//!   suppresses its recipient on the message's channel and stops their open runs
//!   (`suppressed`).
//!
//! It reads the log after its own checkpoint, but only up to what the projections have applied
//! (`follow::LogFollower`), so the runs and messages it looks up are never older than the event
//! it handles.
//! Every command it issues is idempotent (stopping a stopped run is refused and ignored,
//! suppressing twice records nothing), so a crash before the checkpoint only repeats no-ops.

use std::sync::Arc;
use std::time::Duration;

use ocart_domain::order::{Order, OrderEvent};
use ocart_domain::recovery::{
    report_suppresses, Channel, RecoveryRun, RunCommand, RunEvent, StopReason, Suppression,
    SuppressionCommand,
};
use ocart_domain::Clock;
use ocart_projections::queries::recovery as q;
use ocart_projections::{
    decode_event, CommandError, CommandMeta, Commands, EventLog, Outcome, StoredEvent,
};
use tokio::sync::watch;

use crate::follow::{Horizon, LogFollower};
use crate::supervisor::{LogWaker, Next, Processor, DEFAULT_POLL};

/// How long the follow-ups let events gather after a wake-up.
const GATHER: Duration = Duration::from_millis(250);

/// The follow-ups' name and checkpoint.
pub const FOLLOWUPS: &str = "recovery_followups";
/// Its actor (`system:recovery`), as the opener's.
const ACTOR: &str = "recovery";
/// Events read per batch.
const BATCH: i64 = 1_000;

pub struct RecoveryFollowUps {
    log: EventLog,
    runs: Commands<RecoveryRun>,
    orders: Commands<Order>,
    suppressions: Commands<Suppression>,
    clock: Arc<dyn Clock>,
    follower: LogFollower,
    waker: LogWaker,
}

impl RecoveryFollowUps {
    /// `projections`: the checkpoint names of the projectors whose tables it reads (it follows
    /// the log only as far as they have applied it).
    pub fn new(log: EventLog, clock: Arc<dyn Clock>, projections: Arc<[&'static str]>) -> Self {
        Self {
            runs: Commands::new(log.clone(), ()),
            orders: Commands::new(log.clone(), ()),
            suppressions: Commands::new(log.clone(), ()),
            waker: LogWaker::new(&log, DEFAULT_POLL),
            follower: LogFollower::new(&log, FOLLOWUPS, Horizon::Projections(projections), BATCH),
            log,
            clock,
        }
    }

    /// The longest wait for new events when no wake-up comes (writers in other processes).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.waker = LogWaker::new(&self.log, poll);
        self
    }

    /// Handles the next batch of events the projections have already applied.
    pub async fn try_handle_next(&self) -> anyhow::Result<Outcome> {
        let ready = self.follower.next_batch().await?;
        if ready.is_empty() {
            return Ok(Outcome::Idle);
        }
        for event in &ready {
            self.handle(event).await?;
        }
        self.follower.handled(&ready).await?;
        Ok(Outcome::Processed(ready.len()))
    }

    /// Handles everything there is now.
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        while let Outcome::Processed(n) = self.try_handle_next().await? {
            total += n;
        }
        Ok(total)
    }

    async fn handle(&self, event: &StoredEvent) -> anyhow::Result<()> {
        let unreadable = |e: serde_json::Error| {
            anyhow::anyhow!(
                "the {} event at global position {} cannot be read: {e}",
                event.event_type,
                event.global_position
            )
        };
        match event.event_type.as_str() {
            "order/recorded" | "order/status_changed" => {
                let paid = match decode_event::<OrderEvent>(&event.event_type, &event.payload)
                    .map_err(unreadable)?
                {
                    OrderEvent::Recorded { facts, .. } => facts.paid,
                    OrderEvent::StatusChanged { paid, .. } => paid,
                };
                if paid {
                    self.stop_buyers_other_runs(event).await?;
                }
            }
            "recovery/delivery_reported" => {
                if let RunEvent::DeliveryReported {
                    message_key,
                    report,
                    at,
                } = decode_event::<RunEvent>(&event.event_type, &event.payload)
                    .map_err(unreadable)?
                {
                    if let Some(reason) = report_suppresses(&report) {
                        self.suppress(event, &message_key, reason, at).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Stops the open runs of the buyer of a paid order, but the run of the cart it converted.
    async fn stop_buyers_other_runs(&self, event: &StoredEvent) -> anyhow::Result<()> {
        // The order's buyer and attribution are recorded once (attribution never moves), so
        // its state now names the same as at the event.
        let (order, _, _) = self.orders.load(&event.aggregate_id).await?;
        let Some(buyer) = order.facts().and_then(|f| f.email_hash.as_deref()) else {
            return Ok(());
        };
        let converted = order.attribution().map(|a| a.cart_id.as_str());
        for run in q::open_runs_of_recipient(self.log.db(), buyer).await? {
            if Some(run.cart_id.as_str()) == converted {
                continue;
            }
            self.stop(&run.run_id, StopReason::OrderPlaced, event)
                .await?;
        }
        Ok(())
    }

    /// Suppresses the recipient of `message_key` on its channel and stops their open runs.
    async fn suppress(
        &self,
        event: &StoredEvent,
        message_key: &str,
        reason: ocart_domain::recovery::SuppressionReason,
        at: chrono::DateTime<chrono::Utc>,
    ) -> anyhow::Result<()> {
        let db = self.log.db();
        let Some(message) = q::message_by_key(db, message_key).await? else {
            return Ok(());
        };
        let Some(recipient) = message.recipient_hash() else {
            return Ok(());
        };
        let channel = if message.channel == "sms" {
            Channel::Sms
        } else {
            Channel::Email
        };
        let command = SuppressionCommand::Suppress {
            reason,
            channel: Some(channel),
            source: Some(message_key.to_owned()),
            at,
        };
        let meta = CommandMeta::system(ACTOR, Some(event), self.clock.now());
        self.suppressions.execute(recipient, command, &meta).await?;
        for run in q::open_runs_of_recipient(db, recipient).await? {
            self.stop(&run.run_id, StopReason::Suppressed, event)
                .await?;
        }
        Ok(())
    }

    async fn stop(
        &self,
        run_id: &str,
        reason: StopReason,
        cause: &StoredEvent,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let meta = CommandMeta::system(ACTOR, Some(cause), now);
        let command = RunCommand::Stop { reason, at: now };
        match self.runs.execute(run_id, command, &meta).await {
            // A run that ended meanwhile refuses the stop: nothing left to do.
            Ok(_) | Err(CommandError::Rejected(_)) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }
}

#[async_trait::async_trait]
impl Processor for RecoveryFollowUps {
    fn name(&self) -> &'static str {
        FOLLOWUPS
    }

    async fn step(&self) -> anyhow::Result<Next> {
        Ok(match self.try_handle_next().await? {
            Outcome::Processed(n) if n as i64 >= self.follower.batch_size() => Next::Now,
            Outcome::Processed(_) => Next::NewEvents,
            Outcome::Idle => Next::NewEvents,
        })
    }

    /// The projection moves just after the log does: wake on new events, then look again
    /// shortly after, when it has applied them.
    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        // Stopping other runs and suppressing may lag a moment; the dispatcher's own guards
        // (a buyer's order, the suppression list) hold meanwhile.
        self.waker.wait_and_gather(GATHER, stop).await;
    }
}
