//! The one step every log-following process manager shares: read the log after my checkpoint,
//! but (for one that consults read tables) only as far as the projections have applied it, so
//! the tables it queries reflect the events it handles; then move my checkpoint past what I
//! handled.
//!
//! The projections run as one group (`ProjectionGroup`): one read of the log per batch, every
//! projector and its checkpoint committed in one transaction, so in a server their checkpoints
//! move together. The horizon is the lowest of them (what a test driving the projectors one by
//! one, or a projector just added, has not applied yet is not handled either).

use std::sync::Arc;

use ocart_projections::{load_checkpoint, save_checkpoint, Checkpoint, Db, EventLog, StoredEvent};

/// How far a [`LogFollower`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Horizon {
    /// As far as the log goes: a follower that consults no read table (the eraser).
    Log,
    /// As far as every projection named here has applied ([`projections_horizon`]): the
    /// checkpoint names of the projectors the server runs (`Projector::name` of each of
    /// `ocart_api::Core::projectors`).
    Projections(Arc<[&'static str]>),
}

/// Reads the log in batches after a named checkpoint, up to a [`Horizon`].
pub struct LogFollower {
    log: EventLog,
    name: &'static str,
    horizon: Horizon,
    batch_size: i64,
    /// The checkpoint as last loaded or saved: a follower is its checkpoint's only writer (it
    /// runs under the processors lease), so it reads the row once, not before every batch.
    at: std::sync::Mutex<Option<Checkpoint>>,
}

impl LogFollower {
    /// A follower of checkpoint `name` that reads `batch_size` events at most per batch.
    pub fn new(log: &EventLog, name: &'static str, horizon: Horizon, batch_size: i64) -> Self {
        Self {
            log: log.clone(),
            name,
            horizon,
            batch_size,
            at: std::sync::Mutex::new(None),
        }
    }

    pub fn batch_size(&self) -> i64 {
        self.batch_size
    }

    /// The checkpoint (read once, then as last saved).
    pub async fn checkpoint(&self) -> anyhow::Result<Checkpoint> {
        let cached = *self.at.lock().expect("checkpoint");
        Ok(match cached {
            Some(at) => at,
            None => {
                let at = load_checkpoint(self.log.db(), self.name).await?;
                *self.at.lock().expect("checkpoint") = Some(at);
                at
            }
        })
    }

    /// Up to a batch of events after `at` (which may be ahead of the checkpoint: a follower
    /// that handles several batches at once reads ahead, then saves the checkpoint behind what
    /// it has finished, with [`Self::save`]), up to the horizon.
    pub async fn read_after(&self, at: Checkpoint) -> anyhow::Result<Vec<StoredEvent>> {
        let horizon = match &self.horizon {
            Horizon::Log => None,
            Horizon::Projections(projections) => {
                let horizon = projections_horizon(self.log.db(), &projections[..]).await?;
                if horizon <= at {
                    return Ok(Vec::new());
                }
                Some(horizon)
            }
        };
        let mut events = self.log.read_after(at, self.batch_size).await?;
        if let Some(horizon) = horizon {
            if let Some(past) = events.iter().position(|e| e.checkpoint() > horizon) {
                events.truncate(past);
            }
        }
        Ok(events)
    }

    /// Moves the checkpoint to `at` (every effect of the events up to it done).
    pub async fn save(&self, at: Checkpoint) -> anyhow::Result<()> {
        let mut tx = self.log.db().begin().await?;
        save_checkpoint(&mut tx, self.name, at).await?;
        tx.commit().await?;
        *self.at.lock().expect("checkpoint") = Some(at);
        Ok(())
    }

    /// The events after the checkpoint, in global order, up to the horizon; empty when there
    /// is nothing to handle yet. (Behind the projections, the log is not read at all while
    /// they have applied nothing past the checkpoint.)
    pub async fn next_batch(&self) -> anyhow::Result<Vec<StoredEvent>> {
        let at = self.checkpoint().await?;
        self.read_after(at).await
    }

    /// Moves the checkpoint past `handled` (the batch [`Self::next_batch`] answered, once every
    /// effect of it is done). Nothing handled, nothing moved.
    pub async fn handled(&self, handled: &[StoredEvent]) -> anyhow::Result<()> {
        match handled.last() {
            Some(last) => self.save(last.checkpoint()).await,
            None => Ok(()),
        }
    }
}

/// How far every projection in `projections` has applied the log: the lowest of their
/// checkpoints (the start of the log for one that has saved none).
pub async fn projections_horizon(db: &Db, projections: &[&str]) -> anyhow::Result<Checkpoint> {
    // The checkpoints table holds a row per projection and per follower: a handful, read in
    // one query rather than one per projection.
    let rows: Vec<(String, i64, i64)> = match db {
        Db::Pg(pool) => {
            sqlx::query_as("SELECT name, tx, position FROM checkpoints")
                .fetch_all(pool)
                .await?
        }
        Db::Lite(pool) => {
            sqlx::query_as("SELECT name, tx, position FROM checkpoints")
                .fetch_all(pool)
                .await?
        }
    };
    Ok(horizon_of(
        projections,
        rows.iter().map(|(name, tx, position)| {
            (
                name.as_str(),
                Checkpoint {
                    tx: *tx,
                    position: *position,
                },
            )
        }),
    ))
}

/// The lowest checkpoint of `projections` among `saved`; a projection with none counts as the
/// start of the log.
fn horizon_of<'a>(
    projections: &[&str],
    saved: impl Iterator<Item = (&'a str, Checkpoint)>,
) -> Checkpoint {
    let saved: Vec<(&str, Checkpoint)> = saved.collect();
    projections
        .iter()
        .map(|projection| {
            saved
                .iter()
                .find(|(name, _)| name == projection)
                .map(|(_, at)| *at)
                .unwrap_or_default()
        })
        .min()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECTIONS: &[&str] = &["carts", "recovery_runs", "orders", "audit_log"];

    fn at(position: i64) -> Checkpoint {
        Checkpoint {
            tx: position,
            position,
        }
    }

    #[test]
    fn the_horizon_is_the_lowest_projection_and_ignores_the_followers() {
        let mut saved: Vec<(&str, Checkpoint)> =
            PROJECTIONS.iter().map(|name| (*name, at(90))).collect();
        saved[2].1 = at(40);
        // Followers' own checkpoints, behind or ahead, do not count.
        saved.push(("recovery_opener", at(10)));
        saved.push(("nats_relay", at(200)));
        assert_eq!(horizon_of(PROJECTIONS, saved.iter().copied()), at(40));
    }

    #[test]
    fn a_projection_that_saved_nothing_holds_the_horizon_at_the_start() {
        let saved: Vec<(&str, Checkpoint)> = PROJECTIONS
            .iter()
            .skip(1)
            .map(|name| (*name, at(90)))
            .collect();
        assert_eq!(
            horizon_of(PROJECTIONS, saved.iter().copied()),
            Checkpoint::default()
        );
        assert_eq!(
            horizon_of(PROJECTIONS, std::iter::empty()),
            Checkpoint::default()
        );
    }
}
