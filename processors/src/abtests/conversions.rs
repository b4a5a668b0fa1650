//! The A/B conversions, a process manager that follows the log: each surface's own success
//! converts the unit's assignments (`test/converted` on the assignment's stream
//! `assignment_id(test, unit)`), with its revenue, by the pure rule of
//! [`ocart_domain::abtest::conversion`]:
//!
//! - `order/recorded` or `order/status_changed` of a paid order that carries its attribution
//!   (the cart it converted, recorded once): the cart's checkout tests (the order total) and
//!   its bump tests whose assigned variant's offer has a line in the order (those lines' total);
//! - `upsell/accepted` (charged, the store order written): the upsell tests of the unit
//!   (`upsell_unit`: the parent order's cart, else `order:{id}`) whose assigned variant serves
//!   the accepted offer (the accepted price);
//! - `recovery/converted` (a recovered order credited to a run): the run's recovery email and
//!   SMS tests (the recovered revenue).
//!
//! It reads the log after its checkpoint (`abtest_conversions`) only as far as the projections
//! have applied it (`follow::LogFollower`), so the unit's assignments in `test_assignments` are
//! never older than the success it handles. A unit not assigned (or pruned meanwhile) is
//! skipped. Converting is idempotent (an assignment records its first conversion only), so a
//! crash before the checkpoint, or the log replayed from the start, converts nothing twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ocart_domain::abtest::{
    assignment_id, conversion, upsell_unit, Assignment, AssignmentCommand, AssignmentError,
    Success, Surface, TestDefinition, ORDER_SURFACES, RECOVERY_SURFACES, UPSELL_SURFACES,
};
use ocart_domain::order::{order_id_for, Order, OrderEvent, OrderFacts};
use ocart_domain::recovery::RunEvent;
use ocart_domain::upsell::UpsellEvent;
use ocart_domain::{Clock, Currency};
use ocart_projections::queries::abtests as q;
use ocart_projections::{
    decode_event, CommandError, CommandMeta, Commands, EventLog, Outcome, StoredEvent,
};
use tokio::sync::watch;

use crate::follow::{Horizon, LogFollower};
use crate::supervisor::{LogWaker, Next, Processor, DEFAULT_POLL};

/// The conversions' name and checkpoint.
pub const CONVERSIONS: &str = "abtest_conversions";
/// The actor of the A/B processors' commands (`system:abtests`).
pub(crate) const ACTOR: &str = "abtests";
/// Events read per batch.
const BATCH: i64 = 1_000;
/// Units handled at once within a batch.
const CONCURRENCY: usize = 16;
/// How long the conversions let events gather after a wake-up (results may lag a moment).
const GATHER: Duration = Duration::from_millis(100);

/// A success decoded from the log, owning what [`Success`] borrows.
#[derive(Debug, Clone)]
enum Found {
    Order {
        cart_id: String,
        facts: Box<OrderFacts>,
        total: i64,
    },
    Upsell {
        unit: String,
        acceptance_id: String,
        offer_id: String,
        amount: i64,
        currency: Currency,
    },
    Recovery {
        run_id: String,
        order_id: Option<String>,
        revenue: Option<i64>,
        currency: Option<Currency>,
    },
}

impl Found {
    fn success(&self) -> Success<'_> {
        match self {
            Self::Order {
                cart_id,
                facts,
                total,
            } => Success::Order {
                cart_id,
                order_id: &facts.order_id,
                total: *total,
                currency: facts.currency,
                offer_lines: &facts.offer_lines,
            },
            Self::Upsell {
                unit,
                acceptance_id,
                offer_id,
                amount,
                currency,
            } => Success::Upsell {
                unit,
                acceptance_id,
                offer_id,
                amount: *amount,
                currency: *currency,
            },
            Self::Recovery {
                run_id,
                order_id,
                revenue,
                currency,
            } => Success::Recovery {
                run_id,
                order_id: order_id.as_deref(),
                revenue: *revenue,
                currency: *currency,
            },
        }
    }
}

/// What one batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    /// Events read.
    pub events: usize,
    /// `test/converted` events written.
    pub conversions: usize,
}

/// The conversions process manager.
pub struct AbTestConversions {
    log: EventLog,
    assignments: Commands<Assignment>,
    orders: Commands<Order>,
    clock: Arc<dyn Clock>,
    follower: LogFollower,
    waker: LogWaker,
}

impl AbTestConversions {
    /// `projections`: the checkpoint names of the projectors the server runs (it follows the
    /// log only as far as they have applied it).
    pub fn new(log: EventLog, clock: Arc<dyn Clock>, projections: Arc<[&'static str]>) -> Self {
        Self {
            assignments: Commands::new(log.clone(), ()),
            orders: Commands::new(log.clone(), ()),
            waker: LogWaker::new(&log, DEFAULT_POLL),
            follower: LogFollower::new(&log, CONVERSIONS, Horizon::Projections(projections), BATCH),
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
        Ok(match self.next_batch().await? {
            Converted { events: 0, .. } => Outcome::Idle,
            Converted { events, .. } => Outcome::Processed(events),
        })
    }

    /// Handles everything readable now; answers the conversions written.
    pub async fn catch_up(&self) -> anyhow::Result<usize> {
        let mut written = 0;
        loop {
            let batch = self.next_batch().await?;
            if batch.events == 0 {
                return Ok(written);
            }
            written += batch.conversions;
        }
    }

    /// One batch: the successes in it, each unit's in log order, several units at once.
    async fn next_batch(&self) -> anyhow::Result<Converted> {
        let ready = self.follower.next_batch().await?;
        if ready.is_empty() {
            return Ok(Converted::default());
        }
        // Only successes on a surface some test is on can convert: the others are not even
        // decoded (an accepted upsell's unit costs a load of its parent order).
        let candidates: Vec<(usize, &[Surface])> = ready
            .iter()
            .enumerate()
            .filter_map(|(i, event)| {
                let surfaces = match event.event_type.as_str() {
                    "order/recorded" | "order/status_changed" => ORDER_SURFACES,
                    "upsell/accepted" => UPSELL_SURFACES,
                    "recovery/converted" => RECOVERY_SURFACES,
                    _ => return None,
                };
                Some((i, surfaces))
            })
            .collect();
        let tested: Vec<Surface> = if candidates.is_empty() {
            Vec::new()
        } else {
            q::tested_surfaces(self.log.db())
                .await?
                .iter()
                .filter_map(|s| Surface::parse(s))
                .collect()
        };
        let mut found: Vec<(usize, Found)> = Vec::new();
        for (i, surfaces) in candidates {
            if !surfaces.iter().any(|s| tested.contains(s)) {
                continue;
            }
            if let Some(success) = self.decode(&ready[i]).await? {
                found.push((i, success));
            }
        }
        // By unit, in log order (only the first conversion of a unit counts).
        let mut per_unit: Vec<Vec<usize>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (k, (_, success)) in found.iter().enumerate() {
            let unit = success.success().unit().to_owned();
            let slot = *index.entry(unit).or_insert_with(|| {
                per_unit.push(Vec::new());
                per_unit.len() - 1
            });
            per_unit[slot].push(k);
        }
        let (found, ready) = (&found, &ready);
        let results: Vec<anyhow::Result<usize>> = futures::stream::iter(per_unit)
            .map(|successes: Vec<usize>| async move {
                let mut written = 0;
                for k in successes {
                    let (i, success) = &found[k];
                    written += self.convert(&ready[*i], success).await?;
                }
                Ok(written)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut conversions = 0;
        for result in results {
            conversions += result?;
        }
        self.follower.handled(ready).await?;
        Ok(Converted {
            events: ready.len(),
            conversions,
        })
    }

    /// The success an event records, if it is one.
    async fn decode(&self, event: &StoredEvent) -> anyhow::Result<Option<Found>> {
        let unreadable = |e: serde_json::Error| {
            anyhow::anyhow!(
                "the {} event at global position {} cannot be read: {e}",
                event.event_type,
                event.global_position
            )
        };
        Ok(match event.event_type.as_str() {
            "order/recorded" => {
                match decode_event::<OrderEvent>(&event.event_type, &event.payload)
                    .map_err(unreadable)?
                {
                    OrderEvent::Recorded {
                        facts,
                        attribution: Some(attribution),
                        ..
                    } if facts.paid => Some(Found::Order {
                        cart_id: attribution.cart_id,
                        total: facts.total,
                        facts,
                    }),
                    _ => None,
                }
            }
            "order/status_changed" => {
                match decode_event::<OrderEvent>(&event.event_type, &event.payload)
                    .map_err(unreadable)?
                {
                    OrderEvent::StatusChanged {
                        attribution: Some(attribution),
                        paid: true,
                        total,
                        ..
                    } => {
                        // The order's lines and currency never change: the recorded ones.
                        let (order, _, _) = self.orders.load(&event.aggregate_id).await?;
                        order.facts().map(|facts| Found::Order {
                            cart_id: attribution.cart_id,
                            facts: Box::new(facts.clone()),
                            total,
                        })
                    }
                    _ => None,
                }
            }
            "upsell/accepted" => {
                match decode_event::<UpsellEvent>(&event.event_type, &event.payload)
                    .map_err(unreadable)?
                {
                    UpsellEvent::Accepted {
                        acceptance_id,
                        offer_id,
                        parent_order_id,
                        amount,
                        currency,
                        ..
                    } => {
                        let parent = order_id_for(&parent_order_id).to_string();
                        let (order, _, _) = self.orders.load(&parent).await?;
                        let cart = order.attribution().map(|a| a.cart_id.as_str());
                        Some(Found::Upsell {
                            unit: upsell_unit(cart, &parent_order_id),
                            acceptance_id,
                            offer_id,
                            amount,
                            currency,
                        })
                    }
                    _ => None,
                }
            }
            "recovery/converted" => {
                match decode_event::<RunEvent>(&event.event_type, &event.payload)
                    .map_err(unreadable)?
                {
                    RunEvent::Converted {
                        order_id, revenue, ..
                    } => {
                        let currency = match &order_id {
                            Some(id) => {
                                let key = order_id_for(id).to_string();
                                let (order, _, _) = self.orders.load(&key).await?;
                                order.facts().map(|f| f.currency)
                            }
                            None => None,
                        };
                        Some(Found::Recovery {
                            run_id: event.aggregate_id.clone(),
                            order_id,
                            revenue,
                            currency,
                        })
                    }
                    _ => None,
                }
            }
            _ => None,
        })
    }

    /// Converts the unit's assignments `found` converts; answers how many it wrote.
    async fn convert(&self, cause: &StoredEvent, found: &Found) -> anyhow::Result<usize> {
        let success = found.success();
        let unit = success.unit();
        let surfaces = success.surfaces();
        let mut written = 0;
        for row in q::unit_assignments(self.log.db(), unit).await? {
            let Some(surface) = Surface::parse(&row.surface).filter(|s| surfaces.contains(s))
            else {
                continue;
            };
            let definition: TestDefinition = match serde_json::from_str(&row.definition) {
                Ok(definition) => definition,
                Err(e) => {
                    tracing::warn!(test = %row.test_id, error = %e, "a test's stored definition cannot be read; its conversions are skipped");
                    continue;
                }
            };
            let Some(variant) = definition.variants.iter().find(|v| v.key == row.variant) else {
                continue;
            };
            let Some(converted) = conversion(surface, &variant.serves, &success) else {
                continue;
            };
            let now = self.clock.now();
            let meta = CommandMeta::system(ACTOR, Some(cause), now);
            let command = AssignmentCommand::Convert {
                reference: converted.reference,
                revenue_minor: converted.revenue_minor,
                currency: converted.currency,
                at: now,
            };
            match self
                .assignments
                .execute(&assignment_id(&row.test_id, unit), command, &meta)
                .await
            {
                Ok(outcome) => written += outcome.events.len(),
                // Pruned since the table was read: nothing to convert.
                Err(CommandError::Rejected(AssignmentError::NotAssigned)) => {}
                Err(CommandError::Rejected(other)) => {
                    tracing::warn!(test = %row.test_id, unit, error = %other, "a conversion was refused");
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok(written)
    }
}

#[async_trait::async_trait]
impl Processor for AbTestConversions {
    fn name(&self) -> &'static str {
        CONVERSIONS
    }

    async fn step(&self) -> anyhow::Result<Next> {
        Ok(match self.try_handle_next().await? {
            Outcome::Processed(n) if n as i64 >= self.follower.batch_size() => Next::Now,
            Outcome::Processed(_) | Outcome::Idle => Next::NewEvents,
        })
    }

    /// Wakes on new events, then lets a moment pass while the projections apply them and
    /// more gather.
    async fn wait_for_events(&self, stop: &mut watch::Receiver<bool>) {
        self.waker.wait_and_gather(GATHER, stop).await;
    }
}
