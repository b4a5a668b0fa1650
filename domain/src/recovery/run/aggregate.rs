use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::RunCommand;
use super::events::{RunError, RunEvent, RunStart, StopReason};
use crate::recovery::{Step, MIN_DELAY_MIN};

/// Sends of one step, counting the first: CartBay's "retried up to three attempts".
pub const MAX_ATTEMPTS: u32 = 3;
/// Minutes between a failed attempt and the next: `15 × attempt`.
pub const RETRY_STEP_MIN: i64 = 15;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Not started.
    #[default]
    New,
    /// Waiting for its next step to fall due.
    Pending,
    /// A dispatcher has claimed a step and is sending it.
    Running,
    Converted,
    Stopped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Converted => "converted",
            Self::Stopped => "stopped",
        }
    }
}

/// A claim a dispatcher holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub step: u32,
    pub attempt: u32,
    pub message_key: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryRun {
    id: String,
    start: Option<RunStart>,
    status: RunStatus,
    /// 0-based index of the step to send next.
    next_step: usize,
    /// Attempts already made on `next_step`.
    attempts: u32,
    next_due_at: Option<DateTime<Utc>>,
    claim: Option<Claim>,
    /// Coupon codes recorded expired.
    #[serde(default)]
    expired_coupons: Vec<String>,
    /// Delivery reports recorded (their dedupe keys).
    #[serde(default)]
    reports: Vec<String>,
    /// When the run's first message was accepted by its channel.
    #[serde(default)]
    first_sent_at: Option<DateTime<Utc>>,
    /// The order the run is credited with (while converted).
    #[serde(default)]
    credited_order: Option<String>,
    /// Orders whose credit was taken back: they never credit this run again.
    #[serde(default)]
    reversed_orders: Vec<String>,
}

/// Whether a run earns the credit (and the revenue) of an order placed at `placed_at` on its
/// cart: only if it sent a message before the order was placed. A run that never sent, or
/// sent only after the order, did not recover it. Stores give order times in whole seconds,
/// so a message sent within the second the order names counts as before it.
pub fn run_earns_credit(first_sent_at: Option<DateTime<Utc>>, placed_at: DateTime<Utc>) -> bool {
    use chrono::SubsecRound;
    first_sent_at.is_some_and(|sent| sent.trunc_subsecs(0) <= placed_at)
}

/// The message key of (run, step, attempt): stable, so it doubles as the Message-ID.
pub fn message_key(run_id: &str, step: u32, attempt: u32) -> String {
    format!("{run_id}.s{step}.a{attempt}")
}

impl RecoveryRun {
    pub fn status(&self) -> RunStatus {
        self.status
    }
    pub fn start(&self) -> Option<&RunStart> {
        self.start.as_ref()
    }
    pub fn next_due_at(&self) -> Option<DateTime<Utc>> {
        self.next_due_at
    }
    pub fn claim(&self) -> Option<&Claim> {
        self.claim.as_ref()
    }
    /// The step a dispatcher would send next (1-based), and its definition.
    pub fn next_step(&self) -> Option<(u32, &Step)> {
        let start = self.start.as_ref()?;
        start
            .steps
            .get(self.next_step)
            .map(|s| (self.next_step as u32 + 1, s))
    }

    fn ended(&self) -> Option<&'static str> {
        match self.status {
            RunStatus::Converted | RunStatus::Stopped => Some(self.status.as_str()),
            RunStatus::New => Some("not started"),
            _ => None,
        }
    }

    /// When step index `index` falls due, given that the previous message went out at `after`:
    /// its delay from abandonment, but never sooner than 15 minutes after the previous message
    /// (overdue steps after downtime are sent, one at a time, not all at once).
    fn due_of(&self, index: usize, after: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
        let start = self.start.as_ref()?;
        let step = start.steps.get(index)?;
        let due = start.abandoned_at + Duration::minutes(step.delay_min);
        Some(match after {
            Some(previous) => due.max(previous + Duration::minutes(MIN_DELAY_MIN)),
            None => due,
        })
    }

    fn outstanding(&self, key: &str) -> Result<&Claim, RunError> {
        match &self.claim {
            Some(claim) if claim.message_key == key && self.status == RunStatus::Running => {
                Ok(claim)
            }
            _ => Err(RunError::NoSuchClaim(key.to_owned())),
        }
    }
}

impl Aggregate for RecoveryRun {
    const TYPE: &'static str = "recovery_run";
    type Command = RunCommand;
    type Event = RunEvent;
    type Error = RunError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            RunCommand::Start { start, at } => {
                if self.status != RunStatus::New {
                    // Opening the same run twice (a replayed trigger) changes nothing.
                    return Ok(());
                }
                let first = start.steps.first().ok_or(RunError::NoSteps)?;
                let next_due_at = start.abandoned_at + Duration::minutes(first.delay_min);
                vec![RunEvent::Started {
                    start,
                    next_due_at,
                    at,
                }]
            }
            RunCommand::Claim { at, stale_after } => {
                if let Some(state) = self.ended() {
                    return Err(RunError::Ended(state));
                }
                let (step, definition) = self.next_step().ok_or(RunError::Ended("complete"))?;
                let channel = definition.channel;
                match (&self.claim, self.status) {
                    (Some(claim), RunStatus::Running) => {
                        if at - claim.at < stale_after {
                            return Err(RunError::Claimed {
                                step: claim.step,
                                at: claim.at,
                            });
                        }
                        vec![RunEvent::Claimed {
                            step: claim.step,
                            attempt: claim.attempt,
                            message_key: claim.message_key.clone(),
                            channel,
                            resumed: true,
                            at,
                        }]
                    }
                    _ => {
                        let due = self.next_due_at.unwrap_or(at);
                        if at < due {
                            return Err(RunError::NotDue(due));
                        }
                        let attempt = self.attempts + 1;
                        vec![RunEvent::Claimed {
                            step,
                            attempt,
                            message_key: message_key(&self.id, step, attempt),
                            channel,
                            resumed: false,
                            at,
                        }]
                    }
                }
            }
            RunCommand::RecordSent {
                message_key,
                links,
                coupon,
                at,
            } => {
                let claim = self.outstanding(&message_key)?.clone();
                let index = claim.step as usize - 1;
                let step = &self.start.as_ref().ok_or(RunError::NotFound)?.steps[index];
                let next_due_at = self.due_of(index + 1, Some(at));
                let mut events = vec![RunEvent::Dispatched {
                    step: claim.step,
                    attempt: claim.attempt,
                    message_key,
                    channel: step.channel,
                    template: step.template.clone(),
                    links,
                    coupon,
                    next_due_at,
                    at,
                }];
                if next_due_at.is_none() {
                    events.push(RunEvent::Stopped {
                        reason: StopReason::Completed,
                        at,
                    });
                }
                events
            }
            RunCommand::RecordFailed {
                message_key,
                error,
                at,
            } => {
                let claim = self.outstanding(&message_key)?.clone();
                let index = claim.step as usize - 1;
                let (retry_at, next_due_at) = if claim.attempt < MAX_ATTEMPTS {
                    let retry = at + Duration::minutes(RETRY_STEP_MIN * i64::from(claim.attempt));
                    (Some(retry), Some(retry))
                } else {
                    (None, self.due_of(index + 1, Some(at)))
                };
                let mut events = vec![RunEvent::Failed {
                    step: claim.step,
                    attempt: claim.attempt,
                    message_key,
                    error: error.chars().take(500).collect(),
                    retry_at,
                    next_due_at,
                    at,
                }];
                if next_due_at.is_none() {
                    events.push(RunEvent::Stopped {
                        reason: StopReason::Completed,
                        at,
                    });
                }
                events
            }
            RunCommand::Convert {
                order_id,
                revenue,
                placed_at,
                at,
            } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                RunStatus::Converted => return Ok(()),
                _ if order_id
                    .as_ref()
                    .is_some_and(|o| self.reversed_orders.contains(o)) =>
                {
                    return Ok(())
                }
                _ if !run_earns_credit(self.first_sent_at, placed_at.unwrap_or(at)) => {
                    match self.status {
                        RunStatus::Stopped => return Ok(()),
                        _ => vec![RunEvent::Stopped {
                            reason: StopReason::OrderPlaced,
                            at,
                        }],
                    }
                }
                // A run that stopped (even after its last step) still gets the credit for an
                // order it led to.
                _ => vec![RunEvent::Converted {
                    order_id,
                    revenue,
                    at,
                }],
            },
            RunCommand::ReverseConversion {
                order_id,
                status,
                at,
            } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                RunStatus::Converted if self.credited_order.as_ref() == Some(&order_id) => {
                    vec![RunEvent::ConversionReversed {
                        order_id,
                        status,
                        at,
                    }]
                }
                _ => return Ok(()),
            },
            RunCommand::ReportDelivery {
                message_key,
                mut report,
                at,
            } => {
                if self.status == RunStatus::New {
                    return Err(RunError::NotFound);
                }
                if self.reports.contains(&report.dedupe_key(&message_key)) {
                    return Ok(());
                }
                report.detail = report.detail.map(|d| d.chars().take(300).collect());
                vec![RunEvent::DeliveryReported {
                    message_key,
                    report,
                    at,
                }]
            }
            RunCommand::ExpireCoupon { code, at } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                _ if self.expired_coupons.contains(&code) => return Ok(()),
                _ => vec![RunEvent::CouponExpired { code, at }],
            },
            // A click is a fact whatever state the run is in (analytics count it).
            RunCommand::RecordRestore {
                message_key,
                outcome,
                at,
            } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                _ => vec![RunEvent::RestoreClicked {
                    message_key,
                    outcome,
                    at,
                }],
            },
            RunCommand::Stop { reason, at } => match self.status {
                RunStatus::New => return Err(RunError::NotFound),
                RunStatus::Converted | RunStatus::Stopped => return Ok(()),
                _ => vec![RunEvent::Stopped { reason, at }],
            },
        };
        for event in events {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            RunEvent::Started {
                start, next_due_at, ..
            } => {
                self.id = start.run_id.clone();
                self.start = Some(*start);
                self.status = RunStatus::Pending;
                self.next_due_at = Some(next_due_at);
            }
            RunEvent::Claimed {
                step,
                attempt,
                message_key,
                at,
                ..
            } => {
                self.status = RunStatus::Running;
                self.claim = Some(Claim {
                    step,
                    attempt,
                    message_key,
                    at,
                });
            }
            RunEvent::Dispatched {
                next_due_at, at, ..
            } => {
                self.first_sent_at.get_or_insert(at);
                self.claim = None;
                self.next_step += 1;
                self.attempts = 0;
                self.next_due_at = next_due_at;
                self.status = RunStatus::Pending;
            }
            RunEvent::Failed {
                retry_at,
                next_due_at,
                attempt,
                ..
            } => {
                self.claim = None;
                if retry_at.is_some() {
                    self.attempts = attempt;
                } else {
                    self.next_step += 1;
                    self.attempts = 0;
                }
                self.next_due_at = next_due_at;
                self.status = RunStatus::Pending;
            }
            RunEvent::Converted { order_id, .. } => {
                self.claim = None;
                self.next_due_at = None;
                self.status = RunStatus::Converted;
                self.credited_order = order_id;
            }
            RunEvent::ConversionReversed { order_id, .. } => {
                self.credited_order = None;
                self.reversed_orders.push(order_id);
                self.status = RunStatus::Stopped;
            }
            RunEvent::Stopped { .. } => {
                self.claim = None;
                self.next_due_at = None;
                self.status = RunStatus::Stopped;
            }
            RunEvent::CouponExpired { code, .. } => self.expired_coupons.push(code),
            RunEvent::DeliveryReported {
                message_key,
                report,
                ..
            } => self.reports.push(report.dedupe_key(&message_key)),
            RunEvent::RestoreClicked { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::{default_steps, Channel, LinkHashes};
    use cqrs_es::test::TestFramework;

    type RunTest = TestFramework<RecoveryRun>;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn start() -> Box<RunStart> {
        Box::new(RunStart {
            run_id: "run1".into(),
            cart_id: "cart1".into(),
            sequence_id: "default".into(),
            steps: default_steps(),
            abandoned_at: t0(),
            email_hash: Some("h".into()),
            phone_hash: None,
        })
    }

    fn started() -> RunEvent {
        RunEvent::Started {
            start: start(),
            next_due_at: t0() + Duration::minutes(45),
            at: t0(),
        }
    }

    fn claimed(step: u32, attempt: u32, at: DateTime<Utc>) -> RunEvent {
        RunEvent::Claimed {
            step,
            attempt,
            message_key: message_key("run1", step, attempt),
            channel: Channel::Email,
            resumed: false,
            at,
        }
    }

    fn claim(at: DateTime<Utc>) -> RunCommand {
        RunCommand::Claim {
            at,
            stale_after: Duration::minutes(10),
        }
    }

    #[test]
    fn the_first_step_falls_due_its_delay_after_abandonment() {
        RunTest::with(())
            .given_no_previous_events()
            .when(RunCommand::Start {
                start: start(),
                at: t0() + Duration::minutes(5),
            })
            .then_expect_events(vec![RunEvent::Started {
                start: start(),
                next_due_at: t0() + Duration::minutes(45),
                at: t0() + Duration::minutes(5),
            }]);
        RunTest::with(())
            .given(vec![started()])
            .when(claim(t0() + Duration::minutes(44)))
            .then_expect_error(RunError::NotDue(t0() + Duration::minutes(45)));
    }

    #[test]
    fn a_claimed_step_cannot_be_claimed_again_until_the_claim_is_stale() {
        let at = t0() + Duration::minutes(45);
        RunTest::with(())
            .given(vec![started()])
            .when(claim(at))
            .then_expect_events(vec![claimed(1, 1, at)]);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(claim(at + Duration::minutes(1)))
            .then_expect_error(RunError::Claimed { step: 1, at });
        // A crashed dispatcher's claim is taken over with the same message key.
        let later = at + Duration::minutes(11);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(claim(later))
            .then_expect_events(vec![RunEvent::Claimed {
                step: 1,
                attempt: 1,
                message_key: message_key("run1", 1, 1),
                channel: Channel::Email,
                resumed: true,
                at: later,
            }]);
    }

    #[test]
    fn a_sent_step_schedules_the_next_and_the_last_completes_the_run() {
        let at = t0() + Duration::minutes(45);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(RunCommand::RecordSent {
                message_key: message_key("run1", 1, 1),
                links: LinkHashes::default(),
                coupon: None,
                at,
            })
            .then_expect_events(vec![RunEvent::Dispatched {
                step: 1,
                attempt: 1,
                message_key: message_key("run1", 1, 1),
                channel: Channel::Email,
                template: "recovery_email_1".into(),
                links: LinkHashes::default(),
                coupon: None,
                next_due_at: Some(t0() + Duration::hours(24)),
                at,
            }]);
        // After downtime, overdue steps still go out, 15 minutes apart.
        let late = t0() + Duration::hours(80);
        let mut given = vec![started()];
        for (step, at) in [(1, late), (2, late + Duration::minutes(15))] {
            given.push(claimed(step, 1, at));
            given.push(RunEvent::Dispatched {
                step,
                attempt: 1,
                message_key: message_key("run1", step, 1),
                channel: Channel::Email,
                template: format!("recovery_email_{step}"),
                links: LinkHashes::default(),
                coupon: None,
                next_due_at: Some(at + Duration::minutes(15)),
                at,
            });
        }
        let third = late + Duration::minutes(30);
        given.push(claimed(3, 1, third));
        RunTest::with(())
            .given(given)
            .when(RunCommand::RecordSent {
                message_key: message_key("run1", 3, 1),
                links: LinkHashes::default(),
                coupon: None,
                at: third,
            })
            .then_expect_events(vec![
                RunEvent::Dispatched {
                    step: 3,
                    attempt: 1,
                    message_key: message_key("run1", 3, 1),
                    channel: Channel::Email,
                    template: "recovery_email_3".into(),
                    links: LinkHashes::default(),
                    coupon: None,
                    next_due_at: None,
                    at: third,
                },
                RunEvent::Stopped {
                    reason: StopReason::Completed,
                    at: third,
                },
            ]);
    }

    #[test]
    fn failures_retry_fifteen_minutes_times_the_attempt_then_move_on() {
        let at = t0() + Duration::minutes(45);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(RunCommand::RecordFailed {
                message_key: message_key("run1", 1, 1),
                error: "421 try later".into(),
                at,
            })
            .then_expect_events(vec![RunEvent::Failed {
                step: 1,
                attempt: 1,
                message_key: message_key("run1", 1, 1),
                error: "421 try later".into(),
                retry_at: Some(at + Duration::minutes(15)),
                next_due_at: Some(at + Duration::minutes(15)),
                at,
            }]);
        let failed = |attempt: u32, at: DateTime<Utc>, retry: i64| RunEvent::Failed {
            step: 1,
            attempt,
            message_key: message_key("run1", 1, attempt),
            error: "x".into(),
            retry_at: Some(at + Duration::minutes(retry)),
            next_due_at: Some(at + Duration::minutes(retry)),
            at,
        };
        let third = at + Duration::minutes(45);
        RunTest::with(())
            .given(vec![
                started(),
                claimed(1, 1, at),
                failed(1, at, 15),
                claimed(1, 2, at + Duration::minutes(15)),
                failed(2, at + Duration::minutes(15), 30),
                claimed(1, 3, third),
            ])
            .when(RunCommand::RecordFailed {
                message_key: message_key("run1", 1, 3),
                error: "x".into(),
                at: third,
            })
            .then_expect_events(vec![RunEvent::Failed {
                step: 1,
                attempt: 3,
                message_key: message_key("run1", 1, 3),
                error: "x".into(),
                retry_at: None,
                next_due_at: Some(t0() + Duration::hours(24)),
                at: third,
            }]);
    }

    #[test]
    fn which_run_earns_an_orders_credit() {
        let m = |minutes: i64| t0() + Duration::minutes(minutes);
        // (rule, first message sent at, order placed at, credited)
        let table = [
            (
                "a run that sent before the order earns it",
                Some(m(45)),
                m(60),
                true,
            ),
            ("a run that never sent does not", None, m(60), false),
            (
                "a run that sent only after the order does not",
                Some(m(90)),
                m(60),
                false,
            ),
            (
                "a message sent the same instant as the order counts",
                Some(m(60)),
                m(60),
                true,
            ),
            (
                "a message sent within the second the store names counts",
                Some(m(60) + Duration::milliseconds(700)),
                m(60),
                true,
            ),
            (
                "a message sent the second after the order does not",
                Some(m(60) + Duration::seconds(1)),
                m(60),
                false,
            ),
        ];
        for (rule, sent, placed, credited) in table {
            assert_eq!(run_earns_credit(sent, placed), credited, "{rule}");
        }
    }

    fn sent_first_step(at: DateTime<Utc>) -> Vec<RunEvent> {
        vec![
            started(),
            claimed(1, 1, at),
            RunEvent::Dispatched {
                step: 1,
                attempt: 1,
                message_key: message_key("run1", 1, 1),
                channel: Channel::Email,
                template: "recovery_email_1".into(),
                links: LinkHashes::default(),
                coupon: None,
                next_due_at: Some(t0() + Duration::hours(24)),
                at,
            },
        ]
    }

    fn convert(placed_at: DateTime<Utc>) -> RunCommand {
        RunCommand::Convert {
            order_id: Some("1001".into()),
            revenue: Some(2500),
            placed_at: Some(placed_at),
            at: placed_at + Duration::minutes(1),
        }
    }

    #[test]
    fn an_order_before_any_message_stops_the_run_without_credit() {
        let placed = t0() + Duration::minutes(40);
        RunTest::with(())
            .given(vec![started()])
            .when(convert(placed))
            .then_expect_events(vec![RunEvent::Stopped {
                reason: StopReason::OrderPlaced,
                at: placed + Duration::minutes(1),
            }]);
        let sent = t0() + Duration::minutes(45);
        RunTest::with(())
            .given(sent_first_step(sent))
            .when(convert(sent + Duration::minutes(10)))
            .then_expect_events(vec![RunEvent::Converted {
                order_id: Some("1001".into()),
                revenue: Some(2500),
                at: sent + Duration::minutes(11),
            }]);
    }

    #[test]
    fn a_reversed_order_takes_the_credit_back_once_and_never_credits_again() {
        let sent = t0() + Duration::minutes(45);
        let mut given = sent_first_step(sent);
        given.push(RunEvent::Converted {
            order_id: Some("1001".into()),
            revenue: Some(2500),
            at: sent + Duration::minutes(11),
        });
        let reverse = |order: &str| RunCommand::ReverseConversion {
            order_id: order.into(),
            status: "cancelled".into(),
            at: sent + Duration::hours(2),
        };
        RunTest::with(())
            .given(given.clone())
            .when(reverse("other"))
            .then_expect_events(vec![]);
        RunTest::with(())
            .given(given.clone())
            .when(reverse("1001"))
            .then_expect_events(vec![RunEvent::ConversionReversed {
                order_id: "1001".into(),
                status: "cancelled".into(),
                at: sent + Duration::hours(2),
            }]);
        given.push(RunEvent::ConversionReversed {
            order_id: "1001".into(),
            status: "cancelled".into(),
            at: sent + Duration::hours(2),
        });
        RunTest::with(())
            .given(given.clone())
            .when(reverse("1001"))
            .then_expect_events(vec![]);
        // A replayed conversion of the reversed order changes nothing.
        RunTest::with(())
            .given(given)
            .when(convert(sent + Duration::minutes(10)))
            .then_expect_events(vec![]);
    }

    #[test]
    fn an_ended_run_claims_nothing_and_stops_once() {
        let at = t0() + Duration::minutes(45);
        let stopped = RunEvent::Stopped {
            reason: StopReason::Unsubscribed,
            at,
        };
        RunTest::with(())
            .given(vec![started(), stopped.clone()])
            .when(claim(at))
            .then_expect_error(RunError::Ended("stopped"));
        RunTest::with(())
            .given(vec![started(), stopped])
            .when(RunCommand::Stop {
                reason: StopReason::Manual,
                at,
            })
            .then_expect_events(vec![]);
        RunTest::with(())
            .given(vec![started(), claimed(1, 1, at)])
            .when(RunCommand::RecordSent {
                message_key: message_key("run1", 1, 2),
                links: LinkHashes::default(),
                coupon: None,
                at,
            })
            .then_expect_error(RunError::NoSuchClaim(message_key("run1", 1, 2)));
    }
}
