//! The upsell charger (`upsell_charger`): follows the log from its own checkpoint and, for
//! every acceptance a batch's `upsell/*` events name, drives it by its current state, loaded
//! from its events as `Commands::load` loads it:
//!
//! - `charging` — charges the saved payment method with the idempotency key recorded in
//!   `upsell/before_charge`, and records the answer (`RecordCharge`);
//! - `unknown` — reconciles: the same request with the same key again while no charge reference
//!   is known (the gateway answers the first outcome, never a second charge), else a read-back
//!   (`retrieve`). Retried from an in-memory schedule with backoff (0.5 s doubling to 60 s);
//!   an unknown outcome is never recorded as a decline;
//! - `succeeded` (by the charger, the confirm route or a webhook) — writes the store order and
//!   records it (`RecordOrderWritten` → `upsell/accepted`);
//! - `requires_action` — nothing: the confirm route continues it after the shopper;
//! - `accepted` — carries each requested, unanswered refund to the gateway against the
//!   acceptance's own charge (`RecordRefund`), then notes it on the store order
//!   (`RecordStoreRefund`).
//!
//! Acceptances are driven concurrently (64 at most), each by one drive at a time, batches
//! pipelined: the next batch is read and started while the slowest charge of the last one is
//! still out; the checkpoint moves past a batch once it and every batch before it are done
//! (`try_handle_next`). A crash anywhere repeats only idempotent
//! work: the gateway key answers the first charge, and every store write is looked up before it
//! is made (`store::orders`). On start and every minute a sweep of the acceptances that still
//! need driving (`queries::upsells::open_acceptances`) picks up what an in-memory schedule lost
//! in a restart.
//!
//! Store orders: with the WooCommerce connector, strategy `A` is a child order of the parent;
//! strategy `B` merges the line into the parent when the shopper accepted within
//! `upsells.merge_cutoff_min` of the parent's placement (the accept time, not the write time,
//! decides, so a repeat decides the same) and falls back to `A` past it. Without a connector (the
//! embedded default) the store order is OCart's own: the acceptance records the id
//! `ocart-{acceptance}` as its child order, and no `Order` aggregate is made for it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use ocart_domain::order::{order_id_for, Order};
use ocart_domain::upsell::{
    AcceptanceStatus, ChargeResult, OrderStrategy, RefundResult, RefundStatus, UpsellAcceptance,
    UpsellCommand, UpsellEvent,
};
use ocart_domain::{Clock, Money};
use ocart_projections::queries::upsells::open_acceptances;
use ocart_projections::{
    decode_event, Checkpoint, CommandError, CommandMeta, Commands, EventLog, Outcome, StoredEvent,
};
use tokio::sync::watch;

use super::{retry_after, StoreLine};
use crate::follow::{Horizon, LogFollower};
use crate::gateways::{ChargeOutcome, ChargeRequest, Gateways, RefundOutcome, RefundRequest};
use crate::store::WooCommerce;
use crate::supervisor::{LogWaker, Next, Processor, DEFAULT_POLL};

/// The charger's name and checkpoint.
pub const UPSELL_CHARGER: &str = "upsell_charger";
/// The acceptances' aggregate type in the log.
const ACCEPTANCE_TYPE: &str = "upsell_acceptance";
/// Its actor (`system:upsell_charger`).
const ACTOR: &str = "upsell_charger";
/// Events read per batch.
const BATCH: i64 = 1_000;
/// Batches read ahead of the checkpoint at most.
const AHEAD: usize = 32;
/// How long one pass of the pipeline keeps reading before it finishes what it started.
const PASS: Duration = Duration::from_secs(1);
/// Acceptances driven at once.
const CONCURRENCY: usize = 64;
/// How often the open acceptances are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Acceptances looked at per sweep.
const SWEEP_LIMIT: i64 = 1_000;
/// Store writes tried within one drive (then the schedule and the sweep try again).
const STORE_ATTEMPTS: u32 = 4;
/// The first wait between two store writes within a drive; it doubles.
const STORE_BACKOFF: Duration = Duration::from_millis(50);
/// State changes one drive makes at most (charge, record, order, refunds…): a guard against a
/// state that does not move.
const MAX_MOVES: usize = 16;
/// Acceptances remembered as settled (their sequence), so the charger's own events do not
/// cost a reload each.
const SETTLED_MEMORY: usize = 100_000;

/// What the charger needs of the process's configuration.
#[derive(Debug, Clone)]
pub struct ChargerConfig {
    /// OCart's public base URL (`recovery.public_url`): the gateway sends a shopper back to
    /// `{public_url}/ocart/v1/upsells/acceptances/{acceptance}/return` after a 3DS or payer
    /// action (the route reads the payment back from the gateway).
    pub public_url: String,
}

/// How one drive of an acceptance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driven {
    /// Nothing left to do until a new event (or never), at this sequence.
    Settled(i64),
    /// An outcome is still open (unknown charge or refund, a store write that failed): try
    /// again after the next backoff.
    Retry,
    /// A retry is scheduled and not due yet: left to the schedule.
    Waiting,
}

/// One retry of one acceptance.
#[derive(Debug, Clone, Copy)]
struct Retry {
    due: Instant,
    attempt: u32,
}

/// A batch read and not yet done: its last event, and the drives it still waits for.
struct Pending {
    last: Checkpoint,
    open: usize,
}

/// Pops the done batches at the front of `batches`: the checkpoint past the last of them.
fn take_done(batches: &mut VecDeque<Pending>, front: &mut u64) -> Option<Checkpoint> {
    let mut last = None;
    while batches.front().is_some_and(|b| b.open == 0) {
        last = batches.pop_front().map(|b| b.last);
        *front += 1;
    }
    last
}

/// Awaits `work` while the drives in flight go on (collecting those that end into `ended`):
/// a drive holds a database connection at times, so leaving the drives unpolled while the
/// pipeline waits for one of its own could exhaust the pool and wait on itself.
async fn while_driving<T, S: futures::Stream + Unpin>(
    work: impl std::future::Future<Output = T>,
    drives: &mut S,
    ended: &mut Vec<S::Item>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut drives = drives.fuse();
    loop {
        tokio::select! {
            out = &mut work => return out,
            Some(done) = drives.next() => ended.push(done),
        }
    }
}

/// One drive on `batch`'s account ended.
fn close(batches: &mut VecDeque<Pending>, front: u64, batch: u64) {
    let index = batch
        .checked_sub(front)
        .and_then(|i| usize::try_from(i).ok());
    if let Some(pending) = index.and_then(|i| batches.get_mut(i)) {
        pending.open = pending.open.saturating_sub(1);
    }
}

/// What `upsell/before_charge` said: the charge's request, made the same on every call.
#[derive(Debug, Clone)]
struct Charge {
    parent_order_id: String,
    offer_id: String,
    product_id: ocart_domain::ProductId,
    product_name: String,
    quantity: u32,
    amount: i64,
    currency: ocart_domain::Currency,
    gateway: String,
    customer: Option<String>,
    payment_method: String,
    idempotency_key: String,
    strategy: OrderStrategy,
    at: DateTime<Utc>,
}

/// What `upsell/refund_requested` said.
#[derive(Debug, Clone)]
struct RequestedRefund {
    refund_id: String,
    charge_ref: String,
    amount: i64,
    currency: ocart_domain::Currency,
    reason: Option<String>,
    idempotency_key: String,
}

/// What an acceptance's events asked for: its charge and its refunds.
struct Asked {
    charge: Option<Charge>,
    refunds: Vec<RequestedRefund>,
}

pub struct UpsellCharger {
    log: EventLog,
    acceptances: Commands<UpsellAcceptance>,
    orders: Commands<Order>,
    gateways: Gateways,
    woo: Option<WooCommerce>,
    clock: Arc<dyn Clock>,
    config: ChargerConfig,
    follower: LogFollower,
    waker: LogWaker,
    schedule: Mutex<HashMap<String, Retry>>,
    settled: Mutex<HashMap<String, i64>>,
    /// The charge each acceptance asked for (its first event never changes).
    charges: Mutex<HashMap<String, Charge>>,
    last_sweep: Mutex<Option<Instant>>,
}

impl UpsellCharger {
    pub fn new(
        log: EventLog,
        gateways: Gateways,
        woo: Option<WooCommerce>,
        clock: Arc<dyn Clock>,
        config: ChargerConfig,
    ) -> Self {
        Self {
            acceptances: Commands::new(log.clone(), ()).with_cache(SETTLED_MEMORY),
            orders: Commands::new(log.clone(), ()),
            waker: LogWaker::new(&log, DEFAULT_POLL),
            follower: LogFollower::new(&log, UPSELL_CHARGER, Horizon::Log, BATCH),
            log,
            gateways,
            woo,
            clock,
            config,
            schedule: Mutex::new(HashMap::new()),
            settled: Mutex::new(HashMap::new()),
            charges: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(None),
        }
    }

    /// Runs the acceptances' commands on `commands` (the server's, so their state cache is
    /// shared: a status read waiting on an acceptance finds the charger's appends in it).
    pub fn with_acceptances(mut self, commands: Commands<UpsellAcceptance>) -> Self {
        self.acceptances = commands;
        self
    }

    /// The longest wait for new events when no wake-up comes (writers in other processes).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.waker = LogWaker::new(&self.log, poll);
        self
    }

    /// Drives the acceptances the log's new events name, batch after batch, without waiting
    /// for one batch's slowest charge before starting the next: a pipeline of up to
    /// [`AHEAD`] batches read ahead of the checkpoint and [`CONCURRENCY`] drives. Each
    /// acceptance is driven by one drive at a time (an event for an acceptance in flight makes
    /// it driven once more after, on the account of the earliest batch naming it), and the
    /// checkpoint moves past a batch only once it and every batch before it are done, so a
    /// crash repeats only idempotent work. Returns after [`PASS`] of reading, once what it
    /// started is done (so retries, sweeps and a stop are looked at), or when the log is read
    /// to its end and nothing is in flight.
    pub async fn try_handle_next(&self) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        let mut read_at = self.follower.checkpoint().await?;
        let mut batches: VecDeque<Pending> = VecDeque::new();
        // The index of `batches.front()`, and of the next batch read.
        let mut front = 0u64;
        let mut next = 0u64;
        let mut flying: HashMap<String, Option<(u64, StoredEvent)>> = HashMap::new();
        // A batch may name up to `BATCH` acceptances: at most `CONCURRENCY` run at once.
        let permits = tokio::sync::Semaphore::new(CONCURRENCY);
        let permits = &permits;
        let mut drives = FuturesUnordered::new();
        let drive = |id: String, cause: StoredEvent, batch: u64| async move {
            let result = match permits.acquire().await {
                Ok(_permit) => self.drive_and_schedule(&id, Some(&cause)).await,
                Err(closed) => Err(closed.into()),
            };
            (id, batch, result)
        };
        let mut handled = 0usize;
        let mut at_end = false;
        // Drives that ended, to be accounted for at the top of the loop.
        let mut ended: Vec<(String, u64, anyhow::Result<()>)> = Vec::new();
        loop {
            for (id, batch, result) in ended.drain(..) {
                result?;
                close(&mut batches, front, batch);
                match flying.remove(&id).flatten() {
                    // Not when its drive settled past the event, nor when a retry is scheduled
                    // (the schedule drives it by its whole state).
                    Some((account, cause))
                        if !self.settled_at(&id, cause.sequence) && !self.waiting(&id) =>
                    {
                        flying.insert(id.clone(), None);
                        drives.push(drive(id, cause, account));
                    }
                    Some((account, _)) => close(&mut batches, front, account),
                    None => {}
                }
            }
            if let Some(done) = take_done(&mut batches, &mut front) {
                while_driving(self.follower.save(done), &mut drives, &mut ended).await?;
            }
            let reading =
                started.elapsed() < PASS && batches.len() < AHEAD && drives.len() < CONCURRENCY;
            if reading && !at_end {
                let batch =
                    while_driving(self.follower.read_after(read_at), &mut drives, &mut ended)
                        .await?;
                if let Some(last) = batch.last() {
                    read_at = last.checkpoint();
                    handled += batch.len();
                    at_end = (batch.len() as i64) < self.follower.batch_size();
                    let index = next;
                    next += 1;
                    let mut pending = Pending {
                        last: read_at,
                        open: 0,
                    };
                    for (id, cause) in self.due(&batch)? {
                        match flying.get_mut(&id) {
                            // Driven once more when its drive ends, on the earliest account.
                            Some(again) => match again {
                                Some((_, latest)) => *latest = cause,
                                None => {
                                    *again = Some((index, cause));
                                    pending.open += 1;
                                }
                            },
                            None => {
                                flying.insert(id.clone(), None);
                                pending.open += 1;
                                drives.push(drive(id, cause, index));
                            }
                        }
                    }
                    batches.push_back(pending);
                    continue;
                }
                at_end = true;
            }
            if !ended.is_empty() {
                continue;
            }
            if drives.is_empty() {
                // Nothing in flight, every batch read is done and saved.
                if !reading || at_end {
                    break;
                }
                continue;
            }
            tokio::select! {
                done = drives.next() => ended.extend(done),
                _ = self.waker.changed(), if reading => at_end = false,
            }
        }
        Ok(if handled == 0 {
            Outcome::Idle
        } else {
            Outcome::Processed(handled)
        })
    }

    /// The acceptances a batch names (each once, with the last of its events as the cause),
    /// but for those this charger wrote and drove through already.
    ///
    /// The charges the batch's `upsell/before_charge` events ask for are remembered on the way,
    /// so a drive that finds its state in the cache needs no read of the stream.
    fn due(&self, batch: &[StoredEvent]) -> anyhow::Result<Vec<(String, StoredEvent)>> {
        let mut order: Vec<&str> = Vec::new();
        let mut last: HashMap<&str, &StoredEvent> = HashMap::new();
        for event in batch.iter().filter(|e| e.event_type.starts_with("upsell/")) {
            if event.event_type == "upsell/before_charge" {
                self.asked_from(&event.aggregate_id, std::slice::from_ref(event))?;
            }
            if last.insert(event.aggregate_id.as_str(), event).is_none() {
                order.push(event.aggregate_id.as_str());
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|id| {
                let cause = last.get(id)?;
                (!self.settled_at(id, cause.sequence)).then(|| (id.to_owned(), (*cause).clone()))
            })
            .collect())
    }

    /// Whether the charger drove `id` through `sequence` already.
    fn settled_at(&self, id: &str, sequence: i64) -> bool {
        self.settled
            .lock()
            .expect("settled")
            .get(id)
            .is_some_and(|s| sequence <= *s)
    }

    /// Drives the acceptances whose retry is due, and (on start and every minute) the open
    /// acceptances of the read table.
    pub async fn retry_due(&self) -> anyhow::Result<usize> {
        let now = Instant::now();
        let sweep = {
            let mut last = self.last_sweep.lock().expect("sweep");
            let due = last.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY);
            if due {
                *last = Some(now);
            }
            due
        };
        let mut ids: Vec<String> = {
            let mut schedule = self.schedule.lock().expect("schedule");
            let due: Vec<String> = schedule
                .iter()
                .filter(|(_, r)| r.due <= now)
                .map(|(id, _)| id.clone())
                .collect();
            // Due now: the drive below decides again (a `Waiting` answer would skip it).
            for id in &due {
                if let Some(retry) = schedule.get_mut(id) {
                    retry.due = now;
                }
            }
            due
        };
        if sweep {
            for id in open_acceptances(self.log.db(), SWEEP_LIMIT).await? {
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let count = ids.len();
        futures::stream::iter(ids)
            .map(|id| async move { self.drive_and_schedule(&id, None).await })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(count)
    }

    /// Handles everything there is now (tests): due retries, then the log.
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        let mut total = self.retry_due().await?;
        while let Outcome::Processed(n) = self.try_handle_next().await? {
            total += n;
        }
        Ok(total)
    }

    /// When the next retry or sweep is due.
    fn next_due(&self) -> Instant {
        let sweep = self
            .last_sweep
            .lock()
            .expect("sweep")
            .map_or_else(Instant::now, |at| at + SWEEP_EVERY);
        let retry = self
            .schedule
            .lock()
            .expect("schedule")
            .values()
            .map(|r| r.due)
            .min();
        retry.map_or(sweep, |r| r.min(sweep))
    }

    async fn drive_and_schedule(
        &self,
        id: &str,
        cause: Option<&StoredEvent>,
    ) -> anyhow::Result<()> {
        match self.drive(id, cause).await? {
            Driven::Settled(sequence) => {
                self.schedule.lock().expect("schedule").remove(id);
                let mut settled = self.settled.lock().expect("settled");
                if settled.len() >= SETTLED_MEMORY {
                    settled.clear();
                }
                settled.insert(id.to_owned(), sequence);
            }
            Driven::Retry => {
                self.settled.lock().expect("settled").remove(id);
                let mut schedule = self.schedule.lock().expect("schedule");
                let attempt = schedule.get(id).map_or(1, |r| r.attempt.saturating_add(1));
                schedule.insert(
                    id.to_owned(),
                    Retry {
                        due: Instant::now() + retry_after(attempt),
                        attempt,
                    },
                );
            }
            Driven::Waiting => {}
        }
        Ok(())
    }

    /// Whether a retry of `id` is scheduled and not due yet.
    fn waiting(&self, id: &str) -> bool {
        self.schedule
            .lock()
            .expect("schedule")
            .get(id)
            .is_some_and(|r| r.due > Instant::now())
    }

    /// The acceptance's state for a drive caused by `cause`: the one the shared state cache
    /// holds when it is at least as new as the cause and its charge is known (the usual case:
    /// the accept that wrote `cause` left its state there), else [`Self::state`]. A cached
    /// state another process has moved past since is safe to act on: its charge goes out with
    /// the acceptance's own idempotency key (the gateway answers the first charge again), and
    /// recording the answer collides with the newer sequence, so the state is read again.
    async fn state_for(
        &self,
        id: &str,
        cause: Option<&StoredEvent>,
    ) -> anyhow::Result<(UpsellAcceptance, i64)> {
        if let Some(cause) = cause {
            let known = self.charges.lock().expect("charges").contains_key(id);
            if let Some(cached) = self.acceptances.peek(id).filter(|(state, sequence)| {
                known && *sequence >= cause.sequence && state.status().is_some()
            }) {
                return Ok(cached);
            }
        }
        self.state(id).await
    }

    /// The acceptance's state, loaded as `Commands::load` loads it, and its sequence.
    async fn state(&self, id: &str) -> anyhow::Result<(UpsellAcceptance, i64)> {
        let (acceptance, sequence, _, stored) = self.acceptances.load_with_events(id).await?;
        // The charge it asked for, from the same read (its first event never changes).
        let known = self.charges.lock().expect("charges").contains_key(id);
        if !known {
            self.asked_from(id, &stored)?;
        }
        Ok((acceptance, sequence))
    }

    /// What the acceptance's events asked for (its charge; its refunds when `refunds`).
    async fn asked(&self, id: &str, refunds: bool) -> anyhow::Result<Asked> {
        if !refunds {
            if let Some(charge) = self.charges.lock().expect("charges").get(id).cloned() {
                return Ok(Asked {
                    charge: Some(charge),
                    refunds: Vec::new(),
                });
            }
        }
        let stored = self.log.load(ACCEPTANCE_TYPE, id).await?;
        self.asked_from(id, &stored)
    }

    /// What the acceptance's `stored` events asked for; the charge is remembered.
    fn asked_from(&self, id: &str, stored: &[StoredEvent]) -> anyhow::Result<Asked> {
        let mut asked = Asked {
            charge: None,
            refunds: Vec::new(),
        };
        for event in stored {
            if !matches!(
                event.event_type.as_str(),
                "upsell/before_charge" | "upsell/refund_requested"
            ) {
                continue;
            }
            let typed: UpsellEvent =
                decode_event(&event.event_type, &event.payload).map_err(|e| {
                    anyhow::anyhow!(
                        "the {} event {id}#{} cannot be read: {e}",
                        event.event_type,
                        event.sequence
                    )
                })?;
            match typed {
                UpsellEvent::BeforeCharge {
                    parent_order_id,
                    offer_id,
                    product_id,
                    product_name,
                    quantity,
                    amount,
                    currency,
                    gateway,
                    customer,
                    payment_method,
                    idempotency_key,
                    strategy,
                    at,
                    ..
                } => {
                    asked.charge = Some(Charge {
                        parent_order_id,
                        offer_id,
                        product_id,
                        product_name,
                        quantity,
                        amount,
                        currency,
                        gateway,
                        customer,
                        payment_method,
                        idempotency_key,
                        strategy,
                        at,
                    })
                }
                UpsellEvent::RefundRequested {
                    refund_id,
                    charge_ref,
                    amount,
                    currency,
                    reason,
                    idempotency_key,
                    ..
                } => asked.refunds.push(RequestedRefund {
                    refund_id,
                    charge_ref,
                    amount,
                    currency,
                    reason,
                    idempotency_key,
                }),
                _ => {}
            }
        }
        if let Some(charge) = &asked.charge {
            let mut charges = self.charges.lock().expect("charges");
            if charges.len() >= SETTLED_MEMORY {
                charges.clear();
            }
            charges.insert(id.to_owned(), charge.clone());
        }
        Ok(asked)
    }

    /// Issues `command` and answers the acceptance after it. A refusal (the acceptance moved
    /// meanwhile: the confirm route, a webhook) is not an error: the state is loaded again and
    /// the drive decides again.
    async fn record(
        &self,
        id: &str,
        command: UpsellCommand,
        cause: Option<&StoredEvent>,
        sequence: i64,
    ) -> anyhow::Result<(UpsellAcceptance, i64)> {
        let meta = CommandMeta::system(ACTOR, cause, self.clock.now());
        match self.acceptances.execute(id, command, &meta).await {
            Ok(outcome) => {
                let sequence = outcome.events.last().map_or(sequence, |e| e.sequence);
                Ok((outcome.aggregate, sequence))
            }
            Err(CommandError::Rejected(refused)) => {
                tracing::debug!(acceptance = id, error = %refused, "the acceptance moved meanwhile");
                self.state(id).await
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Does what the acceptance's state asks for, until it waits on someone else.
    async fn drive(&self, id: &str, cause: Option<&StoredEvent>) -> anyhow::Result<Driven> {
        use AcceptanceStatus as S;
        let mut called_unknown = false;
        let (mut acceptance, mut sequence) = self.state_for(id, cause).await?;
        for _ in 0..MAX_MOVES {
            let Some(status) = acceptance.status() else {
                return Ok(Driven::Settled(sequence));
            };
            let now = self.clock.now();
            let next = match status {
                S::Charging | S::Unknown => {
                    if status == S::Unknown && (called_unknown || self.waiting(id)) {
                        return Ok(if called_unknown {
                            Driven::Retry
                        } else {
                            Driven::Waiting
                        });
                    }
                    let charge = self.charge_of(id).await?;
                    let Some(gateway) = self.gateways.get(&charge.gateway) else {
                        tracing::warn!(acceptance = id, gateway = %charge.gateway, "the acceptance's gateway is not configured; retrying later");
                        return Ok(Driven::Retry);
                    };
                    let outcome = match (status, acceptance.charge_ref()) {
                        (S::Unknown, Some(charge_ref)) => gateway.retrieve(charge_ref).await,
                        _ => gateway.charge(&self.charge_request(id, &charge)?).await,
                    };
                    if matches!(outcome, ChargeOutcome::Unknown { .. }) {
                        called_unknown = true;
                    }
                    let result = charge_result(outcome);
                    UpsellCommand::RecordCharge { result, at: now }
                }
                // The confirm route continues it after the shopper's action.
                S::RequiresAction | S::Declined | S::DeclinedByShopper => {
                    return Ok(Driven::Settled(sequence))
                }
                S::Succeeded => {
                    let charge = self.charge_of(id).await?;
                    let written = self.write_store_order(id, &acceptance, &charge).await;
                    let (order_id, strategy) = match written {
                        Ok(written) => written,
                        Err(err) => {
                            tracing::warn!(acceptance = id, error = %format!("{err:#}"), "the store order could not be written; retrying later");
                            return Ok(Driven::Retry);
                        }
                    };
                    UpsellCommand::RecordOrderWritten {
                        order_id,
                        strategy,
                        at: now,
                    }
                }
                S::Accepted => return self.drive_refunds(id, &acceptance, sequence, cause).await,
            };
            (acceptance, sequence) = self.record(id, next, cause, sequence).await?;
        }
        tracing::warn!(
            acceptance = id,
            "the acceptance did not settle; retrying later"
        );
        Ok(Driven::Retry)
    }

    /// The charge `upsell/before_charge` asked for.
    async fn charge_of(&self, id: &str) -> anyhow::Result<Charge> {
        self.asked(id, false).await?.charge.ok_or_else(|| {
            anyhow::anyhow!("acceptance {id} has no upsell/before_charge to charge by")
        })
    }

    /// Carries requested refunds to the gateway, then notes the refunded ones on the store
    /// order.
    async fn drive_refunds(
        &self,
        id: &str,
        acceptance: &UpsellAcceptance,
        sequence: i64,
        cause: Option<&StoredEvent>,
    ) -> anyhow::Result<Driven> {
        let pending = acceptance.refunds().iter().any(|r| {
            r.status == RefundStatus::Requested
                || (r.status == RefundStatus::Refunded && r.store_refund_id.is_none())
        });
        if !pending {
            return Ok(Driven::Settled(sequence));
        }
        let asked = self.asked(id, true).await?;
        let mut open = false;
        let mut sequence = sequence;
        for refund in acceptance.refunds() {
            let Some(asked) = asked
                .refunds
                .iter()
                .find(|r| r.refund_id == refund.refund_id)
            else {
                continue;
            };
            let mut refund_ref = refund.refund_ref.clone();
            if refund.status == RefundStatus::Requested {
                let Some(gateway) = self.gateways.get(acceptance.gateway()) else {
                    tracing::warn!(acceptance = id, gateway = %acceptance.gateway(), "the acceptance's gateway is not configured; retrying the refund later");
                    open = true;
                    continue;
                };
                // The upsell's own charge, never the parent order's.
                let charge_ref = if asked.charge_ref.is_empty() {
                    acceptance.charge_ref().unwrap_or_default().to_owned()
                } else {
                    asked.charge_ref.clone()
                };
                let request = RefundRequest {
                    idempotency_key: asked.idempotency_key.clone(),
                    charge_ref,
                    amount: Money::new(asked.amount, asked.currency)
                        .map_err(|e| anyhow::anyhow!("refund {} of {id}: {e}", asked.refund_id))?,
                    reason: asked.reason.clone(),
                };
                let result = match gateway.refund(&request).await {
                    RefundOutcome::Refunded { refund_ref } => RefundResult::Refunded { refund_ref },
                    RefundOutcome::Failed { code, message } => {
                        RefundResult::Failed { code, message }
                    }
                    RefundOutcome::Unknown { reason } => {
                        tracing::warn!(acceptance = id, refund = %asked.refund_id, %reason, "the refund's outcome is not known; retrying later");
                        open = true;
                        continue;
                    }
                };
                refund_ref = match &result {
                    RefundResult::Refunded { refund_ref } => Some(refund_ref.clone()),
                    RefundResult::Failed { .. } => None,
                };
                let command = UpsellCommand::RecordRefund {
                    refund_id: asked.refund_id.clone(),
                    result,
                    at: self.clock.now(),
                };
                sequence = self.record(id, command, cause, sequence).await?.1;
            }
            if refund_ref.is_none() || refund.store_refund_id.is_some() {
                continue;
            }
            match self
                .note_store_refund(acceptance.child_order_id(), asked)
                .await
            {
                Ok(store_refund_id) => {
                    let command = UpsellCommand::RecordStoreRefund {
                        refund_id: asked.refund_id.clone(),
                        store_refund_id,
                        at: self.clock.now(),
                    };
                    sequence = self.record(id, command, cause, sequence).await?.1;
                }
                Err(err) => {
                    tracing::warn!(acceptance = id, refund = %asked.refund_id, error = %format!("{err:#}"), "the refund could not be noted on the store order; retrying later");
                    open = true;
                }
            }
        }
        Ok(if open {
            Driven::Retry
        } else {
            Driven::Settled(sequence)
        })
    }

    /// The charge as every call makes it: the same key and parameters.
    fn charge_request(&self, id: &str, charge: &Charge) -> anyhow::Result<ChargeRequest> {
        let amount = Money::new(charge.amount, charge.currency)
            .map_err(|e| anyhow::anyhow!("the charge of {id}: {e}"))?;
        Ok(ChargeRequest {
            idempotency_key: charge.idempotency_key.clone(),
            amount,
            customer: charge.customer.clone(),
            payment_method: charge.payment_method.clone(),
            description: format!(
                "{} (upsell of order {})",
                charge.product_name, charge.parent_order_id
            ),
            invoice_id: id.to_owned(),
            return_url: Some(format!(
                "{}/ocart/v1/upsells/acceptances/{id}/return",
                self.config.public_url.trim_end_matches('/')
            )),
            metadata: vec![
                (crate::gateways::ACCEPTANCE_METADATA.into(), id.to_owned()),
                (
                    "ocart_parent_order_id".into(),
                    charge.parent_order_id.clone(),
                ),
                ("ocart_offer_id".into(), charge.offer_id.clone()),
            ],
        })
    }

    /// Writes the store order of a charged acceptance; answers its id and the strategy used.
    async fn write_store_order(
        &self,
        id: &str,
        acceptance: &UpsellAcceptance,
        charge: &Charge,
    ) -> anyhow::Result<(String, OrderStrategy)> {
        let own = || (format!("ocart-{id}"), OrderStrategy::A);
        let Some(woo) = &self.woo else {
            return Ok(own());
        };
        // A parent that is not a WooCommerce order (the store-neutral order API) has no store
        // order to attach a child to: the order is OCart's own.
        let Ok(parent) = charge.parent_order_id.trim().parse::<u64>() else {
            return Ok(own());
        };
        let total = Money::new(charge.amount, charge.currency)
            .map_err(|e| anyhow::anyhow!("the charge of {id}: {e}"))?
            .decimal();
        // What the store's own gateway plugin names the payment by (PayPal: the capture).
        let charge_ref = acceptance.charge_ref().unwrap_or_default();
        let transaction_id = match self.gateways.get(&charge.gateway) {
            Some(gateway) => gateway.transaction_id(charge_ref).await?,
            None => charge_ref.to_owned(),
        };
        let line = StoreLine {
            acceptance_id: id.to_owned(),
            parent,
            product_id: charge.product_id.clone(),
            product_name: charge.product_name.clone(),
            quantity: charge.quantity,
            total,
            currency: charge.currency.as_str().to_owned(),
            charge_ref: transaction_id,
            gateway: charge.gateway.clone(),
        };
        let strategy = match charge.strategy {
            OrderStrategy::B if self.within_merge_cutoff(charge).await? => OrderStrategy::B,
            _ => OrderStrategy::A,
        };
        let mut pause = STORE_BACKOFF;
        let mut attempt = 1;
        loop {
            let written = match strategy {
                OrderStrategy::A => woo.write_child_order(&line).await,
                OrderStrategy::B => woo.merge_into_parent(&line).await,
            };
            match written {
                Ok(order) => return Ok((order.to_string(), strategy)),
                Err(err) if attempt >= STORE_ATTEMPTS => return Err(err),
                Err(err) => {
                    tracing::debug!(acceptance = id, attempt, error = %format!("{err:#}"), "the store order write failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                    attempt += 1;
                }
            }
        }
    }

    /// Whether the shopper accepted within `upsells.merge_cutoff_min` of the parent's
    /// placement (an unknown parent: no).
    async fn within_merge_cutoff(&self, charge: &Charge) -> anyhow::Result<bool> {
        let parent = order_id_for(&charge.parent_order_id).to_string();
        let (order, _, _) = self.orders.load(&parent).await?;
        let Some(placed_at) = order.facts().map(|f| f.placed_at) else {
            return Ok(false);
        };
        let (settings, _) = ocart_projections::queries::current_settings(self.log.db()).await?;
        let cutoff = chrono::Duration::minutes(i64::from(settings.upsells.merge_cutoff_min));
        Ok(merges(placed_at, charge.at, cutoff))
    }

    /// Notes a gateway refund on the store order; answers the store's refund id (OCart's own
    /// order: `ocart-{refund}`).
    async fn note_store_refund(
        &self,
        order: Option<&str>,
        refund: &RequestedRefund,
    ) -> anyhow::Result<String> {
        let own = format!("ocart-{}", refund.refund_id);
        let (Some(woo), Some(order)) = (&self.woo, order) else {
            return Ok(own);
        };
        let Ok(order) = order.parse::<u64>() else {
            return Ok(own);
        };
        let amount = Money::new(refund.amount, refund.currency)
            .map_err(|e| anyhow::anyhow!("refund {}: {e}", refund.refund_id))?
            .decimal();
        let id = woo
            .note_refund(order, &refund.refund_id, &amount, refund.reason.as_deref())
            .await?;
        Ok(id.to_string())
    }
}

/// Whether an offer accepted at `accepted_at` merges into a parent placed at `placed_at`.
fn merges(placed_at: DateTime<Utc>, accepted_at: DateTime<Utc>, cutoff: chrono::Duration) -> bool {
    accepted_at >= placed_at - chrono::Duration::minutes(1) && accepted_at - placed_at <= cutoff
}

/// The gateway's answer in the aggregate's terms.
fn charge_result(outcome: ChargeOutcome) -> ChargeResult {
    match outcome {
        ChargeOutcome::Succeeded { charge_ref } => ChargeResult::Succeeded { charge_ref },
        ChargeOutcome::RequiresAction {
            charge_ref,
            action_url,
            ..
        } => ChargeResult::RequiresAction {
            charge_ref,
            action_url,
        },
        ChargeOutcome::Declined {
            charge_ref,
            code,
            message,
        } => ChargeResult::Declined {
            charge_ref,
            code,
            message,
        },
        ChargeOutcome::Unknown { charge_ref, reason } => {
            ChargeResult::Unknown { charge_ref, reason }
        }
    }
}

#[async_trait::async_trait]
impl Processor for UpsellCharger {
    fn name(&self) -> &'static str {
        UPSELL_CHARGER
    }

    async fn step(&self) -> anyhow::Result<Next> {
        if Instant::now() >= self.next_due() {
            self.retry_due().await?;
        }
        Ok(match self.try_handle_next().await? {
            Outcome::Processed(n) if n as i64 >= self.follower.batch_size() => Next::Now,
            _ => Next::NewEvents,
        })
    }

    /// A shopper waits on this: wake on new events at once (no gathering), or when the next
    /// retry or sweep is due.
    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        let due = self.next_due();
        let pause = due.saturating_duration_since(Instant::now());
        if pause.is_zero() {
            return;
        }
        tokio::select! {
            _ = self.waker.changed() => {}
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-03-01T09:{minute:02}:00Z"))
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn an_offer_merges_only_within_the_cutoff_of_the_parent() {
        let cutoff = chrono::Duration::minutes(5);
        assert!(merges(at(0), at(0), cutoff));
        assert!(merges(at(0), at(5), cutoff));
        assert!(!merges(at(0), at(6), cutoff));
        assert!(!merges(at(10), at(0), cutoff));
        assert!(!merges(at(0), at(1), chrono::Duration::zero()));
    }

    #[test]
    fn an_unknown_answer_stays_unknown_and_is_never_a_decline() {
        let result = charge_result(ChargeOutcome::Unknown {
            charge_ref: None,
            reason: "timeout".into(),
        });
        assert!(matches!(result, ChargeResult::Unknown { .. }));
        let result = charge_result(ChargeOutcome::RequiresAction {
            charge_ref: "pi_1".into(),
            action_url: Some("https://bank.test".into()),
            client_secret: Some("secret".into()),
        });
        assert_eq!(
            result,
            ChargeResult::RequiresAction {
                charge_ref: "pi_1".into(),
                action_url: Some("https://bank.test".into())
            }
        );
    }
}
