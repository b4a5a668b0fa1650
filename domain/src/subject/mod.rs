//! The `Subject` aggregate: one data subject (id = its [`SubjectHash`]). Erasure is recorded
//! here so every projection blanks the subject's fields, live and on rebuild.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::SubjectHash;

#[derive(Debug, Clone, PartialEq)]
pub enum SubjectCommand {
    Erase { at: DateTime<Utc>, reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SubjectEvent {
    #[serde(rename = "privacy/subject_erased")]
    Erased {
        subject: SubjectHash,
        reason: String,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SubjectEvent {
    fn event_type(&self) -> String {
        "privacy/subject_erased".into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subject error")]
pub struct SubjectError;

/// The aggregate id is the subject hash; the state only remembers it for the event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Subject {
    erased_at: Option<DateTime<Utc>>,
}

impl Aggregate for Subject {
    const TYPE: &'static str = "subject";
    type Command = (SubjectHash, SubjectCommand);
    type Event = SubjectEvent;
    type Error = SubjectError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let (subject, SubjectCommand::Erase { at, reason }) = command;
        sink.write(
            SubjectEvent::Erased {
                subject,
                reason,
                at,
            },
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let SubjectEvent::Erased { at, .. } = event;
        self.erased_at = Some(at);
    }
}
