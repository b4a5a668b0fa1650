//! The projection group as a supervised processor.

use std::time::Duration;

use async_trait::async_trait;
use ocart_projections::{Outcome, ProjectionGroup, COALESCE};
use tokio::sync::watch;

use crate::supervisor::{LogWaker, Next, Processor};

/// The name the projection group goes by in `/ocart/v1/info`.
pub const PROJECTIONS: &str = "projections";

/// Every projector, fed from one read of the log per batch.
pub struct Projections {
    group: ProjectionGroup,
    waker: LogWaker,
}

impl Projections {
    pub fn new(group: ProjectionGroup, poll: Duration) -> Self {
        let waker = LogWaker::new(group.log(), poll);
        Self { group, waker }
    }
}

#[async_trait]
impl Processor for Projections {
    fn name(&self) -> &'static str {
        PROJECTIONS
    }

    async fn step(&self) -> anyhow::Result<Next> {
        Ok(match self.group.try_handle_next().await? {
            Outcome::Processed(n) if n < self.group.small_batch() => Next::After(COALESCE),
            Outcome::Processed(_) => Next::Now,
            // Committed but not readable yet (an older transaction is still open).
            Outcome::Idle if !self.group.caught_up() => Next::After(Duration::from_millis(5)),
            Outcome::Idle => Next::NewEvents,
        })
    }

    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        self.waker.wait(stop).await;
    }

    /// A graceful stop projects every write it acknowledged.
    fn drains_on_stop(&self) -> bool {
        true
    }
}
