//! The A/B conclusion, a periodic process manager over the running tests. Every pass (each
//! `processors.conclude_interval_ms`, 5 s by default) it reads each running test's totals
//! (`test_variant_totals`) and
//!
//! - raises the sample-ratio-mismatch alert (`test/srm_detected`) when the visitors' split
//!   departs from the weights with a p-value below `tests.srm_threshold`
//!   ([`ocart_domain::abtest::srm_alert`]; hash-split tests only, once per run: the aggregate
//!   ignores a repeat, and a test whose alert the table shows for this run is not asked again);
//! - concludes the test (`test/concluded`, with the winner or none and the reason) when
//!   [`ocart_domain::stats::conclude::decide`] says so ([`ocart_domain::abtest::verdict`]).
//!
//! It writes only through the `AbTest` aggregate, whose commands are idempotent (a concluded
//! test stays concluded, a second alert in one run records nothing), so two passes racing (a
//! test stepping one by hand beside the server's) conclude and alert once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ocart_domain::abtest::{srm_alert, verdict, AbTest, TestCommand, TestDefinition, TestError};
use ocart_domain::stats::bayes::Arm;
use ocart_domain::Clock;
use ocart_projections::queries::{self, abtests as q};
use ocart_projections::{CommandError, CommandMeta, Commands, EventLog, Outcome};

use super::conversions::ACTOR;
use crate::supervisor::{Next, Processor};

/// The conclusion's name.
pub const CONCLUDER: &str = "abtest_concluder";
/// How often the conclusion looks at the running tests unless told otherwise.
pub const CONCLUDE_EVERY: Duration = Duration::from_secs(5);

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// Running tests looked at.
    pub tests: usize,
    /// SRM alerts recorded.
    pub srm_alerts: usize,
    /// Tests concluded.
    pub concluded: usize,
}

/// The conclusion process manager.
pub struct AbTestConcluder {
    log: EventLog,
    tests: Commands<AbTest>,
    clock: Arc<dyn Clock>,
    every: Duration,
}

impl AbTestConcluder {
    pub fn new(log: EventLog, clock: Arc<dyn Clock>) -> Self {
        Self {
            tests: Commands::new(log.clone(), ()),
            log,
            clock,
            every: CONCLUDE_EVERY,
        }
    }

    /// The pause between passes (default [`CONCLUDE_EVERY`]).
    pub fn with_interval(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// One pass over the running tests.
    pub async fn run_once(&self) -> anyhow::Result<Judged> {
        let db = self.log.db();
        let (settings, _) = queries::current_settings(db).await?;
        let threshold = settings.tests.srm_threshold;
        let mut judged = Judged::default();
        for row in q::running_tests(db).await? {
            judged.tests += 1;
            let definition: TestDefinition = match serde_json::from_str(&row.definition) {
                Ok(definition) => definition,
                Err(e) => {
                    tracing::warn!(test = %row.id, error = %e, "a test's stored definition cannot be read; it is not judged");
                    continue;
                }
            };
            let totals: HashMap<String, (u64, u64)> = q::variant_totals(db, &row.id)
                .await?
                .into_iter()
                .map(|t| {
                    let count = |n: i64| u64::try_from(n).unwrap_or(0);
                    (t.variant, (count(t.visitors), count(t.conversions)))
                })
                .collect();
            let arms: Vec<Arm> = definition
                .variants
                .iter()
                .map(|v| {
                    let (visitors, conversions) = totals.get(&v.key).copied().unwrap_or((0, 0));
                    Arm {
                        conversions: conversions.min(visitors),
                        visitors,
                    }
                })
                .collect();
            let flagged_this_run = match (row.srm_detected_at, row.started_at) {
                (Some(flagged), Some(started)) => flagged >= started,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !flagged_this_run {
                let visitors: Vec<u64> = arms.iter().map(|a| a.visitors).collect();
                if let Some(srm) = srm_alert(&definition, &visitors, threshold) {
                    let at = self.clock.now();
                    let command = TestCommand::FlagSrm {
                        chi2: srm.chi2,
                        p_value: srm.p_value,
                        visitors,
                        at,
                    };
                    judged.srm_alerts += self.command(&row.id, command).await?;
                }
            }
            match verdict(&definition, &arms) {
                Ok(Some(v)) => {
                    let command = TestCommand::Conclude {
                        winner: v.winner,
                        reason: v.reason,
                        at: self.clock.now(),
                    };
                    judged.concluded += self.command(&row.id, command).await?;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(test = %row.id, error = %e, "the test cannot be judged");
                }
            }
        }
        Ok(judged)
    }

    /// Runs `command` on test `id`; answers the events written. A test that left `running`
    /// since the table was read refuses it: nothing to do.
    async fn command(&self, id: &str, command: TestCommand) -> anyhow::Result<usize> {
        let meta = CommandMeta::system(ACTOR, None, self.clock.now());
        match self.tests.execute(id, command, &meta).await {
            Ok(outcome) => Ok(outcome.events.len()),
            Err(CommandError::Rejected(TestError::WrongStatus(_) | TestError::NotFound)) => Ok(0),
            Err(CommandError::Rejected(other)) => {
                tracing::warn!(test = id, error = %other, "the conclusion was refused");
                Ok(0)
            }
            Err(other) => Err(other.into()),
        }
    }

    /// One pass, as a processor step.
    pub async fn try_handle_next(&self) -> anyhow::Result<Outcome> {
        let judged = self.run_once().await?;
        let acted = judged.srm_alerts + judged.concluded;
        Ok(if acted > 0 {
            Outcome::Processed(acted)
        } else {
            Outcome::Idle
        })
    }
}

#[async_trait::async_trait]
impl Processor for AbTestConcluder {
    fn name(&self) -> &'static str {
        CONCLUDER
    }

    async fn step(&self) -> anyhow::Result<Next> {
        self.run_once().await?;
        Ok(Next::After(self.every))
    }
}
