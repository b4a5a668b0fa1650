//! Retention of A/B assignments, retention's sibling on the same schedule
//! ([`crate::RETENTION_EVERY`]): assignments made more than `recovery.test_assignment_days`
//! ago (365 by default) are pruned through their aggregate (`test/assignment_pruned`), in
//! batches. The `abtests` projector, which owns `test_assignments`, drops the row when it
//! applies the event and keeps what the variant totals counted; this processor writes no table.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ocart_domain::abtest::{assignment_id, Assignment, AssignmentCommand};
use ocart_domain::Clock;
use ocart_projections::queries::{self, abtests as q};
use ocart_projections::{CommandMeta, Commands, EventLog, Outcome};

use super::conversions::ACTOR;
use crate::supervisor::{Next, Processor};
use crate::RETENTION_EVERY;

/// The pruning's name.
pub const ASSIGNMENT_RETENTION: &str = "abtest_retention";
/// Assignments pruned per pass at most (the next pass follows at once).
const BATCH: i64 = 500;
/// Assignments pruned at once within a pass.
const CONCURRENCY: usize = 32;
/// The pause after a pass that found old rows but pruned none of them (the projector has not
/// dropped the rows of assignments already pruned yet).
const LAGGING: Duration = Duration::from_secs(1);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AssignmentsPruned {
    /// Rows older than the cut-off the pass read.
    pub found: usize,
    /// `test/assignment_pruned` events written.
    pub pruned: usize,
}

/// The assignment retention process manager.
pub struct AssignmentRetention {
    log: EventLog,
    assignments: Commands<Assignment>,
    clock: Arc<dyn Clock>,
}

impl AssignmentRetention {
    pub fn new(log: EventLog, clock: Arc<dyn Clock>) -> Self {
        Self {
            assignments: Commands::new(log.clone(), ()),
            log,
            clock,
        }
    }

    /// One pass at the clock's now: up to a batch of the oldest assignments past the window.
    pub async fn prune(&self) -> anyhow::Result<AssignmentsPruned> {
        let db = self.log.db();
        let (settings, _) = queries::current_settings(db).await?;
        let now = self.clock.now();
        let before =
            now - chrono::Duration::days(i64::from(settings.recovery.test_assignment_days));
        let old = q::assignments_before(db, before, BATCH).await?;
        let found = old.len();
        let meta = &CommandMeta::system(ACTOR, None, now);
        let results: Vec<anyhow::Result<usize>> = futures::stream::iter(old)
            .map(|row| async move {
                let id = assignment_id(&row.test_id, &row.unit);
                // A row the projector has not dropped yet may name a unit pruned and assigned
                // again since: only an assignment made before the cut-off is pruned.
                let (current, _, _) = self.assignments.load(&id).await?;
                if current.assigned_at().is_none_or(|at| at >= before) {
                    return Ok(0);
                }
                let outcome = self
                    .assignments
                    .execute(&id, AssignmentCommand::Prune { at: now }, meta)
                    .await?;
                Ok(outcome.events.len())
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut pruned = 0;
        for result in results {
            pruned += result?;
        }
        Ok(AssignmentsPruned { found, pruned })
    }

    /// Prunes until nothing past the window is left to prune now; answers the events written.
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        let mut total = 0;
        loop {
            let pass = self.prune().await?;
            total += pass.pruned;
            if pass.pruned == 0 {
                return Ok(total);
            }
        }
    }

    /// One pass, as a processor step.
    pub async fn try_handle_next(&self) -> anyhow::Result<Outcome> {
        let pass = self.prune().await?;
        Ok(if pass.pruned > 0 {
            Outcome::Processed(pass.pruned)
        } else {
            Outcome::Idle
        })
    }
}

#[async_trait::async_trait]
impl Processor for AssignmentRetention {
    fn name(&self) -> &'static str {
        ASSIGNMENT_RETENTION
    }

    async fn step(&self) -> anyhow::Result<Next> {
        let pass = self.prune().await?;
        Ok(if pass.pruned > 0 {
            Next::After(Duration::from_millis(10))
        } else if pass.found > 0 {
            Next::After(LAGGING)
        } else {
            Next::After(RETENTION_EVERY)
        })
    }
}
