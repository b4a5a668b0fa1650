//! The `DeliverabilityFeed` aggregate: the retention of the deliverability feed, recorded in
//! the log. Retention does not delete feed rows itself; it records a cut-off
//! (`recovery/deliverability_pruned`), and the projection that owns the feed deletes the rows
//! older than it when it applies the event, so a rebuild deletes the same rows at the same
//! point of the log. One instance per store, id [`FEED_ID`].

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// The id of the one feed.
pub const FEED_ID: &str = "deliverability";

/// The cut-off of the feed at `now` when it keeps `days` days: the start (UTC) of the day
/// `days` days ago. Rows recorded before it leave the feed; whole days, so the cut-off moves
/// (and a prune is recorded) at most once a day. `None` when it falls outside the calendar.
pub fn feed_cutoff(now: DateTime<Utc>, days: u32) -> Option<DateTime<Utc>> {
    let then = now.checked_sub_signed(Duration::try_days(i64::from(days))?)?;
    Some(then.date_naive().and_hms_opt(0, 0, 0)?.and_utc())
}

/// Whether pruning up to `before` changes anything after the last cut-off recorded: only a
/// later cut-off does (an earlier or equal one deletes nothing more).
pub fn prune_moves(last: Option<DateTime<Utc>>, before: DateTime<Utc>) -> bool {
    last.is_none_or(|last| before > last)
}

#[derive(Debug, Clone, PartialEq)]
pub enum FeedCommand {
    /// Rows recorded before `before` leave the feed.
    Prune {
        before: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum FeedEvent {
    #[serde(rename = "recovery/deliverability_pruned")]
    Pruned {
        before: DateTime<Utc>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for FeedEvent {
    fn event_type(&self) -> String {
        "recovery/deliverability_pruned".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deliverability feed error")]
pub struct FeedError;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliverabilityFeed {
    pruned_before: Option<DateTime<Utc>>,
}

impl DeliverabilityFeed {
    /// The latest cut-off recorded.
    pub fn pruned_before(&self) -> Option<DateTime<Utc>> {
        self.pruned_before
    }
}

impl Aggregate for DeliverabilityFeed {
    const TYPE: &'static str = "deliverability_feed";
    type Command = FeedCommand;
    type Event = FeedEvent;
    type Error = FeedError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let FeedCommand::Prune { before, at } = command;
        if !prune_moves(self.pruned_before, before) {
            return Ok(());
        }
        sink.write(FeedEvent::Pruned { before, at }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let FeedEvent::Pruned { before, .. } = event;
        self.pruned_before = Some(before);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn feed_cutoff_rules() {
        let cases: &[(&str, &str, u32, Option<&str>)] = &[
            (
                "the cut-off is the start of the day the retention period ago",
                "2026-09-10T15:30:00Z",
                180,
                Some("2026-03-14T00:00:00Z"),
            ),
            (
                "a moment after midnight keeps the same cut-off as the whole day",
                "2026-09-10T00:00:01Z",
                180,
                Some("2026-03-14T00:00:00Z"),
            ),
            (
                "no retention days prunes everything before today",
                "2026-09-10T15:30:00Z",
                0,
                Some("2026-09-10T00:00:00Z"),
            ),
            (
                "a retention period past the calendar's start has no cut-off",
                "2026-09-10T15:30:00Z",
                u32::MAX,
                None,
            ),
        ];
        for (rule, now, days, want) in cases {
            assert_eq!(feed_cutoff(t(now), *days), want.map(t), "{rule}");
        }
    }

    #[test]
    fn prune_moves_rules() {
        let cases: &[(&str, Option<&str>, &str, bool)] = &[
            (
                "the first prune is recorded",
                None,
                "2026-03-14T00:00:00Z",
                true,
            ),
            (
                "a later cut-off is recorded",
                Some("2026-03-13T00:00:00Z"),
                "2026-03-14T00:00:00Z",
                true,
            ),
            (
                "the same cut-off again records nothing",
                Some("2026-03-14T00:00:00Z"),
                "2026-03-14T00:00:00Z",
                false,
            ),
            (
                "an earlier cut-off records nothing",
                Some("2026-03-14T00:00:00Z"),
                "2026-03-01T00:00:00Z",
                false,
            ),
        ];
        for (rule, last, before, want) in cases {
            assert_eq!(prune_moves(last.map(t), t(before)), *want, "{rule}");
        }
    }

    #[test]
    fn a_prune_is_recorded_once_per_cutoff() {
        let before = t("2026-03-14T00:00:00Z");
        let at = t("2026-09-10T15:30:00Z");
        let pruned = FeedEvent::Pruned { before, at };
        TestFramework::<DeliverabilityFeed>::with(())
            .given_no_previous_events()
            .when(FeedCommand::Prune { before, at })
            .then_expect_events(vec![pruned.clone()]);
        TestFramework::<DeliverabilityFeed>::with(())
            .given(vec![pruned])
            .when(FeedCommand::Prune { before, at })
            .then_expect_events(vec![]);
    }
}
