//! Retention, a process manager: keeps OCart from holding what it no longer needs.
//!
//! - Deliverability rows older than `recovery.deliverability_days` (180, counted in whole UTC
//!   days) leave the feed: retention records the cut-off (`recovery/deliverability_pruned`, on
//!   the `DeliverabilityFeed` aggregate) and the `recovery_runs` projector, which owns the feed,
//!   deletes the older rows when it applies that event, so a rebuild deletes the same rows at
//!   the same point of the log. Retention never writes a read table.
//! - Carts inactive for longer than `recovery.cart_retention_days` (90) expire (`cart/expired`),
//!   and their shoppers' personal data is erased: the data key of each subject whose carts are
//!   all that old is deleted (crypto-shredding: what the log holds becomes unreadable) and the
//!   erasure is recorded (`privacy/subject_erased`, reason `retention`), so the read tables
//!   blank the fields. A subject with a newer cart keeps its key until that cart ages out too.

use std::sync::Arc;
use std::time::Duration;

use ocart_domain::cart::{Cart, CartCommand};
use ocart_domain::recovery::{feed_cutoff, DeliverabilityFeed, FeedCommand, FEED_ID};
use ocart_domain::subject::{Subject, SubjectCommand};
use ocart_domain::{Clock, SubjectHash};
use ocart_projections::{
    fetch_all_db, fetch_optional_db, queries, CommandError, CommandMeta, Commands, EventLog,
    Outcome, Vault,
};

use crate::supervisor::{Next, Processor};

/// The actor of retention's commands (`system:retention`).
pub const RETENTION: &str = "retention";

/// Carts expired, and subjects erased, per pass at most (the next pass follows at once).
const BATCH: i64 = 500;

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Feed rows older than the cut-off this pass recorded (the `recovery_runs` projector deletes
    /// them when it applies `recovery/deliverability_pruned`).
    pub deliverability_rows: u64,
    pub carts_expired: u64,
    pub subjects_erased: u64,
}

pub struct Retention {
    log: EventLog,
    vault: Vault,
    carts: Commands<Cart>,
    subjects: Commands<Subject>,
    feed: Commands<DeliverabilityFeed>,
    clock: Arc<dyn Clock>,
}

impl Retention {
    pub fn new(log: EventLog, vault: Vault, clock: Arc<dyn Clock>) -> Self {
        Self {
            carts: Commands::new(log.clone(), ()),
            subjects: Commands::new(log.clone(), ()),
            feed: Commands::new(log.clone(), ()),
            log,
            vault,
            clock,
        }
    }

    /// One pass at `now`.
    pub async fn prune(&self) -> anyhow::Result<Pruned> {
        let db = self.log.db();
        let (settings, _) = queries::current_settings(db).await?;
        let now = self.clock.now();
        let meta = CommandMeta::system(RETENTION, None, now);
        let cart_cutoff =
            now - chrono::Duration::days(i64::from(settings.recovery.cart_retention_days));
        let mut pruned = Pruned::default();
        if let Some(before) = feed_cutoff(now, settings.recovery.deliverability_days) {
            pruned.deliverability_rows = self.prune_feed(before, &meta).await?;
        }
        let stale: Vec<(String,)> = fetch_all_db!(
            db,
            (String,),
            "SELECT cart_id FROM carts WHERE status IN ('active', 'abandoned') \
             AND last_activity_at < $1 ORDER BY last_activity_at LIMIT $2",
            cart_cutoff,
            BATCH
        )?;
        for (cart_id,) in stale {
            match self
                .carts
                .execute(&cart_id, CartCommand::Expire { at: now }, &meta)
                .await
            {
                Ok(outcome) => pruned.carts_expired += outcome.events.len() as u64,
                Err(CommandError::Rejected(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }
        // Subjects whose every cart is past retention and not yet erased.
        let subjects: Vec<(String,)> = fetch_all_db!(
            db,
            (String,),
            "SELECT DISTINCT s FROM ( \
               SELECT email_hash AS s FROM carts WHERE NOT erased AND last_activity_at < $1 \
               UNION SELECT phone_hash FROM carts WHERE NOT erased AND last_activity_at < $1 \
             ) old WHERE s IS NOT NULL AND NOT EXISTS (SELECT 1 FROM carts c \
               WHERE (c.email_hash = old.s OR c.phone_hash = old.s) AND c.last_activity_at >= $1) \
             LIMIT $2",
            cart_cutoff,
            BATCH
        )?;
        for (subject,) in subjects {
            let subject = SubjectHash::from_hex(&subject);
            self.vault.erase(&subject).await?;
            let command = SubjectCommand::Erase {
                at: now,
                reason: "retention".into(),
            };
            self.subjects
                .execute(subject.as_str(), (subject.clone(), command), &meta)
                .await?;
            pruned.subjects_erased += 1;
        }
        Ok(pruned)
    }

    /// Records the feed's cut-off `before` if rows older than it are still in the feed (once
    /// per cut-off: the aggregate records nothing for one it already has). The recovery
    /// projection deletes them when it applies the event. Answers how many rows it covers.
    async fn prune_feed(
        &self,
        before: chrono::DateTime<chrono::Utc>,
        meta: &CommandMeta,
    ) -> anyhow::Result<u64> {
        let old: Option<(i64,)> = fetch_optional_db!(
            self.log.db(),
            (i64,),
            "SELECT COUNT(*) FROM deliverability_events WHERE at < $1",
            before
        )?;
        let old = old.map_or(0, |(n,)| u64::try_from(n).unwrap_or(0));
        if old == 0 {
            return Ok(0);
        }
        let command = FeedCommand::Prune {
            before,
            at: meta.at,
        };
        let outcome = self.feed.execute(FEED_ID, command, meta).await?;
        Ok(if outcome.events.is_empty() { 0 } else { old })
    }

    /// One pass, as a processor step.
    pub async fn try_handle_next(&self) -> anyhow::Result<Outcome> {
        let pruned = self.prune().await?;
        let acted = pruned.carts_expired + pruned.subjects_erased;
        Ok(if acted > 0 {
            Outcome::Processed(acted as usize)
        } else {
            Outcome::Idle
        })
    }
}

/// How often retention looks for what has expired (sooner while there is a backlog).
pub const RETENTION_EVERY: Duration = Duration::from_secs(60);

#[async_trait::async_trait]
impl Processor for Retention {
    fn name(&self) -> &'static str {
        RETENTION
    }

    async fn step(&self) -> anyhow::Result<Next> {
        Ok(match self.try_handle_next().await? {
            Outcome::Processed(_) => Next::After(Duration::from_millis(10)),
            Outcome::Idle => Next::After(RETENTION_EVERY),
        })
    }
}
