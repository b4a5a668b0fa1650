//! Assigning units to running A/B tests on the hot paths (the checkout's resolve, bump
//! eligibility, the upsell token): the [`Assigner`] Core holds.
//!
//! What it keeps in memory, so a checkout with a test costs about what one without does:
//! - the running tests ([`RunningTests`]): read from the `tests` table at most every
//!   [`RUNNING_TTL`] (one reader refreshes while the others use the value held,
//!   `crate::snapshot::Refreshing`), and read again as soon as this process has written a test
//!   event (once the projection has it, bounded by `http.read_your_writes_timeout_ms`), so a
//!   test started here applies to the next request here;
//! - each bandit test's [`Allocator`], given the current per-variant totals
//!   (`running_variant_totals`, one read for every running test) when its batch is due or
//!   every [`BANDIT_REFRESH`];
//! - the assignments it knows ((test, unit) → variant, at most [`KNOWN_MAX`], a shard cleared
//!   when it fills), so a repeat resolve of an assigned cart does no IO at all.
//!
//! A unit it does not know is assigned by `AssignmentCommand::Assign` on its stream (a unit
//! new to the log is one append; one assigned by another instance or before a restart emits
//! nothing and the aggregate holds the variant it has). The variant is chosen by the domain
//! ([`choose_variant`]). The event `test/assigned` reaches NATS through the relay like every
//! event.
//!
//! # Recording without waiting (hash-split tests)
//! A frequentist or Bayesian test's variant is a function of (test, unit, weights), and the
//! weights of a running or stopped test never change: whoever recorded the unit first recorded
//! the same variant. So the answer does not wait for the append: the unit is remembered and
//! its `Assign` queued; the queue is recorded [`RECORD_GATHER`] after its first entry, every
//! command at once (so they share the log's group commits, and its followers wake once for
//! them), and a failed one is forgotten again, so the unit's next request records it. (Waiting for it put the log's
//! commit on the checkout's path: `ocart bench assign` measured 58–62 % of the untested
//! requests/s with one request in ten a new cart.) An append lost to a crash in that moment
//! costs the test one visitor, not a wrong variant. A bandit's variant is the draw recorded
//! first, so a bandit assignment is answered only once it is recorded.
//! [`Assigner::recorded`] waits for the records queued before it: recording an order waits
//! for it, so an order this process records comes after the assignments it queued before
//! (the conversion process manager meets the assignment first). Another instance's order
//! would have to follow a cart's first resolve within [`RECORD_GATHER`] to overtake it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ocart_domain::abtest::{
    assignment_id, choose_variant, Assignment, AssignmentCommand, RunningTest, Surface,
    TestDefinition, Variant, MAX_UNIT_LEN, TEST_TYPE,
};
use ocart_domain::stats::bandit::Allocator;
use ocart_domain::stats::bayes::Arm;
use ocart_domain::stats::conclude::Method;
use ocart_projections::queries::abtests as q;
use ocart_projections::{CommandMeta, Commands, Projector};

use super::StoreFailure;
use crate::core::Core;

/// How long the running tests are served from memory.
pub const RUNNING_TTL: Duration = Duration::from_millis(250);
/// The longest a bandit's allocator goes without the current totals.
pub const BANDIT_REFRESH: Duration = Duration::from_secs(1);
/// The most assignments held in memory.
pub const KNOWN_MAX: usize = 200_000;
/// How long assignments are gathered before they are recorded together.
pub const RECORD_GATHER: Duration = Duration::from_millis(100);
/// The actor of assignments (`system:assigner`).
pub const ASSIGNER: &str = "assigner";

const SHARDS: usize = 16;

/// The running tests, by id.
#[derive(Debug, Default)]
pub struct RunningTests {
    tests: Vec<RunningTest>,
    surfaces: [bool; Surface::ALL.len()],
}

impl RunningTests {
    /// The tests, by id.
    pub fn tests(&self) -> &[RunningTest] {
        &self.tests
    }

    /// Whether a test runs on `surface`.
    pub fn on(&self, surface: Surface) -> bool {
        Surface::ALL
            .iter()
            .position(|s| *s == surface)
            .is_some_and(|i| self.surfaces[i])
    }

    fn of_rows(rows: Vec<q::TestRow>) -> Self {
        let mut running = Self::default();
        for row in rows {
            match serde_json::from_str::<TestDefinition>(&row.definition) {
                Ok(definition) => running.tests.push(RunningTest {
                    id: row.id,
                    definition,
                }),
                // Served as if it did not run (the checkout must not fail on it).
                Err(e) => {
                    tracing::warn!(test = %row.id, error = %e, "a running test's stored definition does not read")
                }
            }
        }
        for (i, surface) in Surface::ALL.iter().enumerate() {
            running.surfaces[i] = running.tests.iter().any(|t| t.surface() == *surface);
        }
        running
    }
}

/// Why an assignment could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(AssignError);

/// The variant a unit has in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned<'t> {
    /// Its index (0: the control).
    pub index: usize,
    pub variant: &'t Variant,
}

/// One bandit test's allocator and when it last had the totals.
#[derive(Debug)]
struct Bandit {
    allocator: Allocator,
    keys: Vec<String>,
    refreshed: Option<Instant>,
}

/// The running tests, the bandits' allocators and the assignments known (see the module).
#[derive(Debug)]
pub struct Assigner {
    running: crate::snapshot::Refreshing<RunningTests>,
    /// The test-event head of this process the snapshot has been read after.
    seen_head: AtomicI64,
    /// How far the abtests projection is known to have applied this process's test events.
    applied: AtomicI64,
    bandits: Mutex<HashMap<String, Bandit>>,
    bandit_refresh: tokio::sync::Mutex<()>,
    known: Arc<Known>,
}

/// The assignments known, in shards, and the records queued or in flight.
#[derive(Debug)]
struct Known {
    shards: Vec<Mutex<HashMap<String, u16>>>,
    queue: Mutex<Vec<Queued>>,
    /// Assignments queued so far, and recorded (or failed) so far: batches are recorded one
    /// after the other, so every assignment queued before `recorded` reaches a count is done.
    queued: AtomicU64,
    recorded: AtomicU64,
    settled: tokio::sync::Notify,
    /// Held while a batch is recorded.
    recording: tokio::sync::Mutex<()>,
}

/// An assignment to record.
#[derive(Debug)]
struct Queued {
    key: String,
    stream: String,
    command: AssignmentCommand,
    meta: CommandMeta,
}

impl Default for Assigner {
    fn default() -> Self {
        Self {
            running: Default::default(),
            seen_head: AtomicI64::new(0),
            applied: AtomicI64::new(0),
            bandits: Mutex::new(HashMap::new()),
            bandit_refresh: tokio::sync::Mutex::new(()),
            known: Arc::new(Known {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                queue: Mutex::new(Vec::new()),
                queued: AtomicU64::new(0),
                recorded: AtomicU64::new(0),
                settled: tokio::sync::Notify::new(),
                recording: tokio::sync::Mutex::new(()),
            }),
        }
    }
}

fn known_key(test_id: &str, unit: &str) -> String {
    let mut key = String::with_capacity(test_id.len() + unit.len() + 1);
    key.push_str(test_id);
    key.push('\u{1f}');
    key.push_str(unit);
    key
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: cheap, and only spreads the shards.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % SHARDS as u64) as usize
}

impl Assigner {
    /// The running tests, from memory (see the module).
    pub async fn running(&self, core: &Core) -> Result<Arc<RunningTests>, AssignError> {
        let head = core.log.head_of(TEST_TYPE);
        if head > self.seen_head.load(Ordering::Acquire) {
            let projection = ocart_projections::AbTestsProjector.name();
            core.read_own_writes(projection, TEST_TYPE, &self.applied)
                .await;
            self.seen_head.fetch_max(head, Ordering::AcqRel);
            self.running.invalidate();
        }
        self.running
            .get(RUNNING_TTL, || async {
                Ok::<_, AssignError>(RunningTests::of_rows(q::running_tests(&core.db).await?))
            })
            .await
    }

    /// Forgets the running tests: the next caller reads them again.
    pub fn invalidate(&self) {
        self.running.invalidate();
    }

    fn known(&self, key: &str) -> Option<usize> {
        self.known.get(key)
    }

    fn remember(&self, key: String, index: usize) {
        self.known.insert(key, index);
    }

    /// Waits until every assignment this process queued before the call is recorded (or
    /// has failed and been forgotten): what an order recorded next must come after in the log,
    /// so the conversion meets its assignment first. Answers at once when none is queued.
    pub async fn recorded(&self) {
        let ticket = self.known.queued.load(Ordering::Acquire);
        loop {
            let settled = self.known.settled.notified();
            if self.known.recorded.load(Ordering::Acquire) >= ticket {
                return;
            }
            settled.await;
        }
    }

    /// A bandit's next draw for `unit`, with the allocator given the current totals first
    /// when its batch is due or it is older than [`BANDIT_REFRESH`].
    async fn draw(
        &self,
        core: &Core,
        test: &RunningTest,
        unit: &str,
    ) -> Result<usize, AssignError> {
        let due = {
            let mut bandits = self.bandits.lock().unwrap_or_else(|e| e.into_inner());
            match bandits.get(&test.id) {
                Some(b) => {
                    b.allocator.needs_refresh()
                        || b.refreshed.is_none_or(|at| at.elapsed() >= BANDIT_REFRESH)
                }
                None => {
                    let allocator = Allocator::new(test.definition.variants.len())
                        .map_err(|e| anyhow::anyhow!("test {}: {e}", test.id))?;
                    bandits.insert(
                        test.id.clone(),
                        Bandit {
                            allocator,
                            keys: test
                                .definition
                                .variants
                                .iter()
                                .map(|v| v.key.clone())
                                .collect(),
                            refreshed: None,
                        },
                    );
                    true
                }
            }
        };
        if due {
            // One refresh at a time; the others draw from the snapshot they have.
            if let Ok(_refreshing) = self.bandit_refresh.try_lock() {
                self.refresh_bandits(core).await?;
            }
        }
        let mut bandits = self.bandits.lock().unwrap_or_else(|e| e.into_inner());
        let allocator = bandits.get_mut(&test.id).map(|b| &mut b.allocator);
        Ok(choose_variant(test, unit, allocator))
    }

    /// Gives every bandit the current totals of its variants (one read for all), and drops
    /// the allocators of tests no longer running.
    async fn refresh_bandits(&self, core: &Core) -> Result<(), AssignError> {
        let running = self.running(core).await?;
        let rows = q::running_variant_totals(&core.db).await?;
        let mut bandits = self.bandits.lock().unwrap_or_else(|e| e.into_inner());
        bandits.retain(|id, _| running.tests.iter().any(|t| &t.id == id));
        let now = Instant::now();
        for (id, bandit) in bandits.iter_mut() {
            let arms: Vec<Arm> = bandit
                .keys
                .iter()
                .map(|key| {
                    rows.iter()
                        .find(|r| &r.test_id == id && &r.variant == key)
                        .map_or(
                            Arm {
                                conversions: 0,
                                visitors: 0,
                            },
                            |r| Arm {
                                conversions: u64::try_from(r.conversions).unwrap_or(0),
                                visitors: u64::try_from(r.visitors).unwrap_or(0),
                            },
                        )
                })
                .collect();
            if let Err(e) = bandit.allocator.refresh(arms) {
                tracing::warn!(test = %id, error = %e, "bandit totals refused; the previous snapshot stays");
            }
            bandit.refreshed = Some(now);
        }
        Ok(())
    }

    /// The variant `unit` has in `test`: the one known in memory, else the one its assignment
    /// stream holds, else a new one chosen now and recorded (`test/assigned`). A unit that
    /// cannot be one (empty, longer than 128) is served the control and not assigned.
    pub async fn assign<'t>(
        &self,
        core: &Core,
        test: &'t RunningTest,
        unit: &str,
    ) -> Result<Assigned<'t>, AssignError> {
        let control = |test: &'t RunningTest| -> Result<Assigned<'t>, AssignError> {
            let variant = test
                .control()
                .ok_or_else(|| anyhow::anyhow!("test {} has no variants", test.id))?;
            Ok(Assigned { index: 0, variant })
        };
        if unit.is_empty() || unit.len() > MAX_UNIT_LEN {
            return control(test);
        }
        let key = known_key(&test.id, unit);
        if let Some(index) = self.known(&key) {
            if let Some(variant) = test.definition.variants.get(index) {
                return Ok(Assigned { index, variant });
            }
        }
        let chosen = if test.definition.method == Method::Bandit {
            self.draw(core, test, unit).await?
        } else {
            choose_variant(test, unit, None)
        };
        let Some(variant) = test.definition.variants.get(chosen) else {
            return control(test);
        };
        let at = core.clock.now();
        let meta = CommandMeta::system(ASSIGNER, None, at);
        let command = AssignmentCommand::Assign {
            test_id: test.id.clone(),
            unit: unit.to_owned(),
            surface: test.surface(),
            variant: variant.key.clone(),
            at,
        };
        let stream = assignment_id(&test.id, unit);
        if test.definition.method != Method::Bandit {
            // The hash's variant is the unit's whoever records it (see the module).
            self.remember(key.clone(), chosen);
            self.known.record(
                &core.assignments,
                Queued {
                    key,
                    stream,
                    command,
                    meta,
                },
            );
            return Ok(Assigned {
                index: chosen,
                variant,
            });
        }
        let outcome = core
            .assignments
            .execute(&stream, command, &meta)
            .await
            .map_err(|e| match StoreFailure::split(e) {
                Ok(failure) => AssignError::Store(failure),
                Err(refused) => AssignError::Internal(anyhow::anyhow!("assignment: {refused}")),
            })?;
        // Assigned before (elsewhere, earlier): the variant recorded first is the unit's.
        let index = outcome
            .aggregate
            .variant()
            .and_then(|key| test.definition.variant_index(key))
            .unwrap_or(chosen);
        self.remember(key, index);
        match test.definition.variants.get(index) {
            Some(variant) => Ok(Assigned { index, variant }),
            None => control(test),
        }
    }
}

impl Known {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<String, u16>> {
        self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &str) -> Option<usize> {
        self.shard(key).get(key).map(|&i| usize::from(i))
    }

    fn insert(&self, key: String, index: usize) {
        let Ok(index) = u16::try_from(index) else {
            return;
        };
        let mut shard = self.shard(&key);
        if shard.len() >= KNOWN_MAX / SHARDS && !shard.contains_key(&key) {
            // Bounded: a full shard starts over (a forgotten unit is asked of its stream).
            shard.clear();
        }
        shard.insert(key, index);
    }

    fn forget(&self, key: &str) {
        self.shard(key).remove(key);
    }

    /// Queues an assignment; the first of a batch starts the task that records it.
    fn record(self: &Arc<Self>, commands: &Arc<Commands<Assignment>>, queued: Queued) {
        let first = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            self.queued.fetch_add(1, Ordering::AcqRel);
            queue.push(queued);
            queue.len() == 1
        };
        if first {
            let (known, commands) = (self.clone(), commands.clone());
            tokio::spawn(async move {
                tokio::time::sleep(RECORD_GATHER).await;
                let _turn = known.recording.lock().await;
                let batch =
                    std::mem::take(&mut *known.queue.lock().unwrap_or_else(|e| e.into_inner()));
                let done = batch.len() as u64;
                let commands = &commands;
                futures::future::join_all(batch.into_iter().map(|q| async move {
                    if let Err(e) = commands.execute(&q.stream, q.command, &q.meta).await {
                        tracing::warn!(assignment = %q.stream, error = %e, "recording an assignment failed; the unit's next request records it");
                        Some(q.key)
                    } else {
                        None
                    }
                }))
                .await
                .into_iter()
                .flatten()
                .for_each(|key| known.forget(&key));
                known.recorded.fetch_add(done, Ordering::AcqRel);
                known.settled.notify_waiters();
            });
        }
    }
}

/// `core.assigner.assign(core, test, unit)`.
pub async fn assign<'t>(
    core: &Core,
    test: &'t RunningTest,
    unit: &str,
) -> Result<Assigned<'t>, AssignError> {
    core.assigner.assign(core, test, unit).await
}

impl From<AssignError> for super::funnels::FunnelsError {
    fn from(err: AssignError) -> Self {
        match err {
            AssignError::Store(failure) => Self::Store(failure),
            AssignError::Internal(err) => Self::Internal(err),
        }
    }
}

impl From<AssignError> for super::bumps::BumpsError {
    fn from(err: AssignError) -> Self {
        match err {
            AssignError::Store(failure) => Self::Store(failure),
            AssignError::Internal(err) => Self::Internal(err),
        }
    }
}

impl From<AssignError> for super::upsells::UpsellsError {
    fn from(err: AssignError) -> Self {
        match err {
            AssignError::Store(failure) => Self::Store(failure),
            AssignError::Internal(err) => Self::Internal(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_shard_starts_over_and_keys_do_not_collide() {
        let assigner = Assigner::default();
        assert_ne!(known_key("ab", "c"), known_key("a", "bc"));
        assigner.remember(known_key("t", "u"), 1);
        assert_eq!(assigner.known(&known_key("t", "u")), Some(1));
        assert_eq!(assigner.known(&known_key("t", "v")), None);
        for i in 0..KNOWN_MAX + SHARDS {
            assigner.remember(known_key("t", &format!("c{i}")), 0);
        }
        let held: usize = assigner
            .known
            .shards
            .iter()
            .map(|s| s.lock().unwrap().len())
            .sum();
        assert!(held <= KNOWN_MAX, "{held}");
    }
}
