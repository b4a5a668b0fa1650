//! The abandonment sweeper, a process manager. It follows the log to keep an exact timer per
//! active cart (last activity + `recovery.abandoned_threshold_min`), fires due timers as
//! `MarkAbandoned` commands, and runs a fallback scan of the carts table every
//! `recovery.abandonment_scan_interval_min` (which also covers timers lost in a restart).
//! Time comes from the [`Clock`] port.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ocart_domain::cart::{Cart, CartCommand, CartError};
use ocart_domain::Clock;
use ocart_projections::{
    load_checkpoint, queries, save_checkpoint, Checkpoint, CommandError, CommandMeta, Commands,
    EventLog, Outcome,
};
use serde::Deserialize;
use tokio::sync::watch;

/// The part of a `cart/created` or `cart/updated` payload the sweeper reads.
#[derive(serde::Deserialize)]
struct Activity {
    captured_at: DateTime<Utc>,
}

/// The sweeper's checkpoint name.
pub const SWEEPER_CHECKPOINT: &str = "sweeper";

#[derive(Default)]
struct Timers {
    by_cart: HashMap<String, DateTime<Utc>>,
    due: BTreeSet<(DateTime<Utc>, String)>,
}

impl Timers {
    fn set(&mut self, cart: &str, at: DateTime<Utc>) {
        self.clear(cart);
        self.by_cart.insert(cart.to_owned(), at);
        self.due.insert((at, cart.to_owned()));
    }

    fn clear(&mut self, cart: &str) {
        if let Some(at) = self.by_cart.remove(cart) {
            self.due.remove(&(at, cart.to_owned()));
        }
    }

    fn take_due(&mut self, now: DateTime<Utc>) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((at, cart)) = self.due.first().cloned() {
            if at > now {
                break;
            }
            self.due.pop_first();
            self.by_cart.remove(&cart);
            out.push(cart);
        }
        out
    }

    fn next_due(&self) -> Option<DateTime<Utc>> {
        self.due.first().map(|(at, _)| *at)
    }
}

pub struct Sweeper {
    log: EventLog,
    carts: Commands<Cart>,
    clock: Arc<dyn Clock>,
    batch_size: i64,
    checkpoint: Mutex<Option<Checkpoint>>,
    timers: Mutex<Timers>,
    last_scan: Mutex<Option<DateTime<Utc>>>,
}

impl Sweeper {
    pub fn new(log: EventLog, clock: Arc<dyn Clock>, batch_size: i64) -> Self {
        Self {
            carts: Commands::new(log.clone(), ()),
            log,
            clock,
            batch_size,
            checkpoint: Mutex::new(None),
            timers: Mutex::new(Timers::default()),
            last_scan: Mutex::new(None),
        }
    }

    /// One step: follow the log, fire due timers, and scan if the scan interval has passed.
    pub async fn try_handle_next(&self) -> anyhow::Result<Outcome> {
        let (settings, _) = queries::current_settings(self.log.db()).await?;
        let threshold = settings.recovery.abandoned_threshold_min;
        let threshold_span = chrono::Duration::minutes(i64::from(threshold));
        let mut handled = self.follow_log(threshold_span).await?;
        let now = self.clock.now();
        let due = self.timers.lock().expect("timers").take_due(now);
        for cart in due {
            handled += usize::from(self.abandon(&cart, threshold).await?);
        }
        let scan_every =
            chrono::Duration::minutes(i64::from(settings.recovery.abandonment_scan_interval_min));
        let scan_due = self
            .last_scan
            .lock()
            .expect("scan")
            .is_none_or(|last| now - last >= scan_every);
        if scan_due {
            for (cart, _) in
                queries::carts_inactive_since(self.log.db(), now - threshold_span, 1000).await?
            {
                handled += usize::from(self.abandon(&cart, threshold).await?);
            }
            *self.last_scan.lock().expect("scan") = Some(now);
        }
        Ok(if handled > 0 {
            Outcome::Processed(handled)
        } else {
            Outcome::Idle
        })
    }

    /// Reads new events and keeps the timers; returns how many cart events it saw.
    async fn follow_log(&self, threshold: chrono::Duration) -> anyhow::Result<usize> {
        let cached = *self.checkpoint.lock().expect("checkpoint");
        let at = match cached {
            Some(at) => at,
            None => load_checkpoint(self.log.db(), SWEEPER_CHECKPOINT).await?,
        };
        let events = self.log.read_after(at, self.batch_size).await?;
        let Some(last) = events.last() else {
            *self.checkpoint.lock().expect("checkpoint") = Some(at);
            return Ok(0);
        };
        let next = last.checkpoint();
        let mut seen = 0;
        {
            let mut timers = self.timers.lock().expect("timers");
            for event in events.iter().filter(|e| e.aggregate_type == "cart") {
                seen += 1;
                match event.event_type.as_str() {
                    // Only the activity time matters here: read just that field.
                    "cart/created" | "cart/updated" => {
                        let activity = Activity::deserialize(&event.payload)?;
                        timers.set(&event.aggregate_id, activity.captured_at + threshold);
                    }
                    _ => timers.clear(&event.aggregate_id),
                }
            }
        }
        let mut tx = self.log.db().begin().await?;
        save_checkpoint(&mut tx, SWEEPER_CHECKPOINT, next).await?;
        tx.commit().await?;
        *self.checkpoint.lock().expect("checkpoint") = Some(next);
        Ok(seen.max(1))
    }

    /// Marks one cart abandoned if it still is inactive; reschedules it if it is not yet.
    async fn abandon(&self, cart: &str, threshold_min: u32) -> anyhow::Result<bool> {
        let now = self.clock.now();
        let meta = CommandMeta::system(SWEEPER_CHECKPOINT, None, now);
        let command = CartCommand::MarkAbandoned {
            at: now,
            threshold_min,
            forced: false,
        };
        match self.carts.execute(cart, command, &meta).await {
            Ok(outcome) => Ok(!outcome.events.is_empty()),
            Err(CommandError::Rejected(CartError::StillActive { abandoned_at, .. })) => {
                self.timers.lock().expect("timers").set(cart, abandoned_at);
                Ok(false)
            }
            Err(CommandError::Rejected(_)) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }

    /// Runs until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>, poll: Duration) {
        let mut wake = self.log.watch();
        while !*stop.borrow() {
            let pause = match self.try_handle_next().await {
                Ok(Outcome::Processed(_)) => Duration::ZERO,
                Ok(Outcome::Idle) => {
                    let next = self.timers.lock().expect("timers").next_due();
                    let until_due = next
                        .and_then(|at| (at - self.clock.now()).to_std().ok())
                        .unwrap_or(poll);
                    until_due.min(poll)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "abandonment sweep failed; retrying");
                    Duration::from_secs(2)
                }
            };
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = wake.changed() => {}
                _ = stop.changed() => {}
            }
        }
    }
}
