//! The recovery process manager that follows the log: `cart/abandoned` opens a run on the
//! matching active sequence (unless `recovery.enabled` is off); a cart captured again, expired
//! or withdrawn stops its open runs; `cart/converted` converts them with the revenue (a run
//! that sent nothing before the order was placed is stopped instead, `run_earns_credit`); an
//! order that later turns cancelled, refunded or failed (`order/status_changed`) takes the
//! credit back from the run it converted (`recovery/conversion_reversed`).
//!
//! It reads the log after its own checkpoint, but only up to what the projections have applied
//! (`follow::LogFollower`), so the read tables it consults are never older than the event it
//! handles. Every command it issues is idempotent (the run id derives from the abandonment
//! event), so a crash before the checkpoint is saved only repeats no-ops.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use ocart_domain::cart::CartEvent;
use ocart_domain::order::{reverses_recovery, OrderEvent};
use ocart_domain::recovery::{
    RecoveryRun, RunCommand, RunError, RunStart, Step, StopReason, TriggerType,
};
use ocart_domain::Clock;
use ocart_projections::queries::recovery as q;
use ocart_projections::{
    decode_event, load_checkpoint, queries, Checkpoint, CommandError, CommandMeta, Commands,
    EventLog, Outcome, StoredEvent,
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use uuid::Uuid;

use crate::follow::{Horizon, LogFollower};
use crate::supervisor::{LogWaker, Next, Processor, DEFAULT_POLL};

/// Cart events that convert or stop a cart's open runs.
const ENDING: &[&str] = &[
    "cart/converted",
    "cart/updated",
    "cart/expired",
    "cart/consent_withdrawn",
];

/// The opener's checkpoint name, and its actor (`system:recovery`).
pub const OPENER: &str = "recovery_opener";
const ACTOR: &str = "recovery";

/// The id of the run an abandonment opens: stable, so a replayed event opens nothing new.
pub fn run_id_for(cart_id: &str, abandoned_event: &Uuid) -> String {
    let digest = Sha256::digest(format!("ocart:run:{cart_id}:{abandoned_event}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes).to_string()
}

/// Carts handled at once within a batch.
const CONCURRENCY: usize = 32;

pub struct RecoveryOpener {
    log: EventLog,
    runs: Commands<RecoveryRun>,
    clock: Arc<dyn Clock>,
    follower: LogFollower,
    waker: LogWaker,
}

impl RecoveryOpener {
    /// `projections`: the checkpoint names of the projectors whose tables it reads (it follows
    /// the log only as far as they have applied it).
    pub fn new(log: EventLog, clock: Arc<dyn Clock>, projections: Arc<[&'static str]>) -> Self {
        Self {
            runs: Commands::new(log.clone(), ()),
            waker: LogWaker::new(&log, DEFAULT_POLL),
            follower: LogFollower::new(&log, OPENER, Horizon::Projections(projections), 200),
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
        let db = self.log.db();
        let ready = self.follower.next_batch().await?;
        if ready.is_empty() {
            return Ok(Outcome::Idle);
        }
        // One query for the open runs of every cart whose events in this batch may end them.
        let ending: Vec<&str> = ready
            .iter()
            .filter(|e| e.aggregate_type == "cart" && ENDING.contains(&e.event_type.as_str()))
            .map(|e| e.aggregate_id.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut open: HashMap<String, Vec<String>> = HashMap::new();
        for chunk in ending.chunks(500) {
            for (cart, run) in q::open_runs_of_carts(db, chunk).await? {
                open.entry(cart).or_default().push(run);
            }
        }
        let handled = ready.len();
        // Carts are independent: each cart's events in order, several carts at once (their
        // commands address different runs, so the appends group-commit together).
        // (Each cart's events go by index: a closure taking borrowed events trips rustc's
        // higher-ranked lifetime check when the future must be `Send`.)
        // An order that takes back its recovery goes with the events of the cart it converted,
        // after them, so the run it reverses has been credited first.
        let mut carts: Vec<(String, &StoredEvent, Option<String>)> = Vec::new();
        for event in &ready {
            if event.aggregate_type == "cart" {
                carts.push((event.aggregate_id.clone(), event, None));
            } else if let Some((cart, order_id)) = self.reversing_order(event).await? {
                carts.push((cart, event, Some(order_id)));
            }
        }
        let mut per_cart: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, (cart, _, _)) in carts.iter().enumerate() {
            let slot = *index.entry(cart.as_str()).or_insert_with(|| {
                per_cart.push(Vec::new());
                per_cart.len() - 1
            });
            per_cart[slot].push(i);
        }
        let (open, carts) = (&open, &carts);
        let results: Vec<anyhow::Result<()>> = futures::stream::iter(per_cart)
            .map(|events: Vec<usize>| async move {
                let cart = carts[events[0]].0.as_str();
                let runs = open.get(cart).map(Vec::as_slice).unwrap_or(&[]);
                for i in events {
                    let (cart, event, order_id) = &carts[i];
                    match order_id {
                        Some(order_id) => self.reverse(event, cart, order_id).await?,
                        None => self.handle(event, runs).await?,
                    }
                }
                Ok(())
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for result in results {
            result?;
        }
        self.follower.handled(&ready).await?;
        Ok(Outcome::Processed(handled))
    }

    async fn handle(&self, event: &StoredEvent, open_runs: &[String]) -> anyhow::Result<()> {
        let cart_id = event.aggregate_id.as_str();
        match event.event_type.as_str() {
            "cart/abandoned" => {
                if let CartEvent::Abandoned { at, kind, .. } =
                    decode_event::<CartEvent>(&event.event_type, &event.payload)?
                {
                    self.open(event, cart_id, at, kind).await?;
                }
            }
            "cart/converted" => {
                if let CartEvent::Converted {
                    at,
                    order_id,
                    revenue,
                    before_abandonment,
                    placed_at,
                } = decode_event::<CartEvent>(&event.event_type, &event.payload)?
                {
                    for run in open_runs {
                        // An order placed before abandonment ends the run but is not its
                        // recovery.
                        let command = if before_abandonment {
                            RunCommand::Stop {
                                reason: StopReason::OrderPlaced,
                                at,
                            }
                        } else {
                            RunCommand::Convert {
                                order_id: order_id.clone(),
                                revenue,
                                placed_at,
                                at,
                            }
                        };
                        self.run_command(run, command, event).await?;
                    }
                }
            }
            "cart/updated" | "cart/expired" | "cart/consent_withdrawn" => {
                let reason = if event.event_type == "cart/consent_withdrawn" {
                    StopReason::NoConsent
                } else {
                    StopReason::CartNotAbandoned
                };
                for run in open_runs {
                    let command = RunCommand::Stop {
                        reason,
                        at: self.clock.now(),
                    };
                    self.run_command(run, command, event).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The cart and store order id of an `order/status_changed` event whose new status takes
    /// back a recovery (cancelled, refunded, failed), if the order converted a cart.
    async fn reversing_order(
        &self,
        event: &StoredEvent,
    ) -> anyhow::Result<Option<(String, String)>> {
        if event.aggregate_type != "order" || event.event_type != "order/status_changed" {
            return Ok(None);
        }
        let OrderEvent::StatusChanged { status, .. } =
            decode_event::<OrderEvent>(&event.event_type, &event.payload)?
        else {
            return Ok(None);
        };
        if !reverses_recovery(&status) {
            return Ok(None);
        }
        Ok(
            match q::order_of_key(self.log.db(), &event.aggregate_id).await? {
                Some((order_id, Some(cart_id))) => Some((cart_id, order_id)),
                _ => None,
            },
        )
    }

    /// Takes the credit of `order_id` back from whichever run of `cart_id` holds it.
    async fn reverse(
        &self,
        event: &StoredEvent,
        cart_id: &str,
        order_id: &str,
    ) -> anyhow::Result<()> {
        let OrderEvent::StatusChanged { status, at, .. } =
            decode_event::<OrderEvent>(&event.event_type, &event.payload)?
        else {
            return Ok(());
        };
        for run in q::runs_of_cart(self.log.db(), cart_id).await? {
            let command = RunCommand::ReverseConversion {
                order_id: order_id.to_owned(),
                status: status.clone(),
                at,
            };
            self.run_command(&run, command, event).await?;
        }
        Ok(())
    }

    async fn open(
        &self,
        event: &StoredEvent,
        cart_id: &str,
        abandoned_at: chrono::DateTime<chrono::Utc>,
        kind: ocart_domain::cart::AbandonmentKind,
    ) -> anyhow::Result<()> {
        let db = self.log.db();
        let (settings, _) = queries::current_settings(db).await?;
        if !settings.recovery.enabled {
            return Ok(());
        }
        let trigger = match kind {
            ocart_domain::cart::AbandonmentKind::CartAbandoned => TriggerType::CartAbandoned,
            ocart_domain::cart::AbandonmentKind::CheckoutAbandoned => {
                TriggerType::CheckoutAbandoned
            }
        };
        let Some(sequence) = q::sequence_for_trigger(db, trigger.as_str()).await? else {
            return Ok(());
        };
        let Some(cart) = q::cart_for_send(db, cart_id).await? else {
            return Ok(());
        };
        let steps: Vec<Step> = serde_json::from_value(sequence.steps.0.clone())?;
        let run_id = run_id_for(cart_id, &event.event_id);
        let start = RunStart {
            run_id: run_id.clone(),
            cart_id: cart_id.to_owned(),
            sequence_id: sequence.sequence_id,
            steps,
            abandoned_at,
            email_hash: cart.email_hash,
            phone_hash: cart.phone_hash,
        };
        let command = RunCommand::Start {
            start: Box::new(start),
            at: self.clock.now(),
        };
        self.run_command(&run_id, command, event).await
    }

    async fn run_command(
        &self,
        run_id: &str,
        command: RunCommand,
        cause: &StoredEvent,
    ) -> anyhow::Result<()> {
        let meta = CommandMeta::system(ACTOR, Some(cause), self.clock.now());
        match self.runs.execute(run_id, command, &meta).await {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(RunError::NotFound | RunError::NoSteps)) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// Handles everything there is now.
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        while let Outcome::Processed(n) = self.try_handle_next().await? {
            total += n;
        }
        Ok(total)
    }
}

#[async_trait::async_trait]
impl Processor for RecoveryOpener {
    fn name(&self) -> &'static str {
        OPENER
    }

    async fn step(&self) -> anyhow::Result<Next> {
        Ok(match self.try_handle_next().await? {
            Outcome::Processed(_) => Next::Now,
            Outcome::Idle => Next::NewEvents,
        })
    }

    /// The projections move just after the log does: wake on new events, then look again
    /// shortly after, when they have applied them.
    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        self.waker.wait_behind_projections(stop).await;
    }
}

/// The checkpoint the opener has reached.
pub async fn opener_checkpoint(log: &EventLog) -> anyhow::Result<Checkpoint> {
    Ok(load_checkpoint(log.db(), OPENER).await?)
}
