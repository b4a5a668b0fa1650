//! The abandonment sweeper, a process manager. It keeps one exact timer: the moment the
//! earliest active cart passes `recovery.abandoned_threshold_min` of inactivity (read from the
//! carts table's `carts_due (status, last_activity_at, cart_id)` index). When it fires, every cart due by then is
//! marked abandoned with a `MarkAbandoned` command (the aggregate re-checks the inactivity), and
//! the timer is re-armed for the next one. `recovery.abandonment_scan_interval_min` bounds the
//! sleep, so a fallback scan runs at least that often. A new capture can only be due later than
//! the earliest cart already waiting, so following the log is not needed (ADR 0006 has the
//! measurement). Time comes from the [`Clock`] port.
//!
//! A scan goes on after the last cart the previous scan looked at (a keyset cursor), and skips
//! carts it marked itself that the carts table has not caught up with: otherwise, during a
//! burst, each scan met again the carts just marked, and loaded each only to have the
//! aggregate refuse it (a 1,000,000-cart sweep took 14 times as long as a 100,000 one).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use ocart_domain::cart::{Cart, CartCommand, CartError};
use ocart_domain::Clock;
use ocart_projections::{queries, CommandError, CommandMeta, Commands, EventLog, Outcome};

use crate::keyset::KeysetWalk;
use crate::supervisor::{Next, Processor, DEFAULT_POLL};

/// The actor name of the sweeper's commands (`system:sweeper`).
pub const SWEEPER: &str = "sweeper";

/// Carts marked per scan at most (the next scan follows at once).
const SCAN_LIMIT: i64 = 1000;
/// Carts marked at once within a scan.
const CONCURRENCY: usize = 32;

/// Carts whose abandonment the sweeper remembers at most.
const MARKED_MAX: usize = 200_000;

pub struct Sweeper {
    log: EventLog,
    carts: Commands<Cart>,
    clock: Arc<dyn Clock>,
    /// By `(last_activity_at, cart_id)`, remembering the abandonments it appended.
    walk: KeysetWalk,
    poll: Duration,
}

impl Sweeper {
    pub fn new(log: EventLog, clock: Arc<dyn Clock>) -> Self {
        Self {
            carts: Commands::new(log.clone(), ()),
            log,
            clock,
            walk: KeysetWalk::new(MARKED_MAX),
            poll: DEFAULT_POLL,
        }
    }

    /// The longest sleep between scans (default half a second).
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// One step: marks every cart due now; answers when the next one falls due.
    pub async fn try_handle_next(&self) -> anyhow::Result<(Outcome, Option<DateTime<Utc>>)> {
        let (settings, _) = queries::current_settings(self.log.db()).await?;
        let threshold = settings.recovery.abandoned_threshold_min;
        let span = chrono::Duration::minutes(i64::from(threshold));
        let now = self.clock.now();
        let mut due =
            queries::carts_inactive_since(self.log.db(), now - span, self.walk.after(), SCAN_LIMIT)
                .await?;
        let full = due.len() as i64 >= SCAN_LIMIT;
        self.walk.scanned(
            full,
            due.last().map(|c| (c.last_activity_at, c.cart_id.clone())),
        );
        self.walk
            .keep_fresh(&mut due, |c| (c.cart_id.as_str(), c.last_position));
        // Each cart is its own aggregate: mark several at once so their appends group-commit.
        let results: Vec<anyhow::Result<bool>> = futures::stream::iter(due)
            .map(|cart| async move { self.abandon(&cart.cart_id, threshold, now).await })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut marked = 0;
        for result in results {
            marked += usize::from(result?);
        }
        let scan_by = now
            + chrono::Duration::minutes(i64::from(settings.recovery.abandonment_scan_interval_min));
        let next = if full {
            // More are due right away: no need to ask when the next one is.
            now
        } else {
            match queries::earliest_active_activity(self.log.db()).await? {
                Some(at) => (at + span).min(scan_by),
                None => scan_by,
            }
        };
        Ok((
            if marked > 0 {
                Outcome::Processed(marked)
            } else {
                Outcome::Idle
            },
            Some(next),
        ))
    }

    /// Marks one cart abandoned if it still is inactive.
    async fn abandon(
        &self,
        cart: &str,
        threshold_min: u32,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let meta = CommandMeta::system(SWEEPER, None, now);
        let command = CartCommand::MarkAbandoned {
            at: now,
            threshold_min,
            forced: false,
        };
        match self.carts.execute(cart, command, &meta).await {
            Ok(outcome) => {
                self.walk.wrote(cart, outcome.last_position());
                Ok(!outcome.events.is_empty())
            }
            // Captured again meanwhile, converted, or withdrawn: nothing to do.
            Err(CommandError::Rejected(
                CartError::StillActive { .. }
                | CartError::NotActive(_)
                | CartError::NotFound
                | CartError::Closed(_),
            )) => Ok(false),
            Err(other) => Err(other.into()),
        }
    }
}

#[async_trait::async_trait]
impl Processor for Sweeper {
    fn name(&self) -> &'static str {
        SWEEPER
    }

    /// Marks what is due, then sleeps until the next cart is due, at most `poll` (so a manual
    /// clock, or a carts table filled by another process, is noticed).
    async fn step(&self) -> anyhow::Result<Next> {
        Ok(match self.try_handle_next().await? {
            (Outcome::Processed(_), _) => Next::Now,
            (Outcome::Idle, next) => Next::After(
                next.and_then(|at| (at - self.clock.now()).to_std().ok())
                    .unwrap_or(self.poll)
                    .min(self.poll),
            ),
        })
    }
}
