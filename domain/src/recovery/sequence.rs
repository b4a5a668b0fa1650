//! The `RecoverySequence` aggregate: a named, triggered list of steps. Steps are normalised
//! (see [`super::normalise`]) before anything is recorded, so the log only holds valid,
//! ordered timing. Deleting a sequence archives it: runs already open keep their history.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::{normalise, Step, TriggerType};
use crate::FieldError;

/// The longest sequence name.
pub const MAX_NAME_LEN: usize = 120;

#[derive(Debug, Clone, PartialEq)]
pub enum SequenceCommand {
    Create {
        name: String,
        trigger: TriggerType,
        steps: Vec<Step>,
        active: bool,
        at: DateTime<Utc>,
    },
    /// Changes what is given; `None` keeps the current value.
    Update {
        name: Option<String>,
        trigger: Option<TriggerType>,
        steps: Option<Vec<Step>>,
        active: Option<bool>,
        at: DateTime<Utc>,
    },
    Archive {
        at: DateTime<Utc>,
    },
}

/// What a sequence is, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceDefinition {
    pub name: String,
    pub trigger: TriggerType,
    pub steps: Vec<Step>,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SequenceEvent {
    #[serde(rename = "recovery/sequence_created")]
    Created {
        definition: SequenceDefinition,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/sequence_updated")]
    Updated {
        definition: SequenceDefinition,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/sequence_archived")]
    Archived { at: DateTime<Utc> },
}

impl DomainEvent for SequenceEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created { .. } => "recovery/sequence_created",
            Self::Updated { .. } => "recovery/sequence_updated",
            Self::Archived { .. } => "recovery/sequence_archived",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("the sequence is not valid")]
    Invalid(Vec<FieldError>),
    #[error("a sequence with this id exists")]
    AlreadyExists,
    #[error("no such sequence")]
    NotFound,
    #[error("the sequence is archived")]
    Archived,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoverySequence {
    definition: Option<SequenceDefinition>,
    archived: bool,
}

impl RecoverySequence {
    pub fn definition(&self) -> Option<&SequenceDefinition> {
        self.definition.as_ref()
    }

    pub fn is_archived(&self) -> bool {
        self.archived
    }
}

/// Checks the name and normalises the steps, reporting every problem at once.
fn validated(
    name: String,
    trigger: TriggerType,
    steps: Vec<Step>,
    active: bool,
) -> Result<SequenceDefinition, SequenceError> {
    let mut errors = Vec::new();
    let name = name.trim().to_owned();
    if name.is_empty() {
        errors.push(FieldError::new("name", "name the sequence"));
    } else if name.chars().count() > MAX_NAME_LEN {
        errors.push(FieldError::new(
            "name",
            format!("at most {MAX_NAME_LEN} characters"),
        ));
    }
    let steps = match normalise(steps) {
        Ok(steps) => steps,
        Err(mut more) => {
            errors.append(&mut more);
            Vec::new()
        }
    };
    if errors.is_empty() {
        Ok(SequenceDefinition {
            name,
            trigger,
            steps,
            active,
        })
    } else {
        Err(SequenceError::Invalid(errors))
    }
}

impl Aggregate for RecoverySequence {
    const TYPE: &'static str = "recovery_sequence";
    type Command = SequenceCommand;
    type Event = SequenceEvent;
    type Error = SequenceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            SequenceCommand::Create {
                name,
                trigger,
                steps,
                active,
                at,
            } => {
                if self.definition.is_some() {
                    return Err(SequenceError::AlreadyExists);
                }
                SequenceEvent::Created {
                    definition: validated(name, trigger, steps, active)?,
                    at,
                }
            }
            SequenceCommand::Update {
                name,
                trigger,
                steps,
                active,
                at,
            } => {
                let current = self.definition.as_ref().ok_or(SequenceError::NotFound)?;
                if self.archived {
                    return Err(SequenceError::Archived);
                }
                let definition = validated(
                    name.unwrap_or_else(|| current.name.clone()),
                    trigger.unwrap_or(current.trigger),
                    steps.unwrap_or_else(|| current.steps.clone()),
                    active.unwrap_or(current.active),
                )?;
                if &definition == current {
                    return Ok(());
                }
                SequenceEvent::Updated { definition, at }
            }
            SequenceCommand::Archive { at } => {
                if self.definition.is_none() {
                    return Err(SequenceError::NotFound);
                }
                if self.archived {
                    return Ok(());
                }
                SequenceEvent::Archived { at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SequenceEvent::Created { definition, .. }
            | SequenceEvent::Updated { definition, .. } => {
                self.definition = Some(definition);
            }
            SequenceEvent::Archived { .. } => self.archived = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::{default_steps, Channel};
    use cqrs_es::test::TestFramework;

    type SequenceTest = TestFramework<RecoverySequence>;

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn definition() -> SequenceDefinition {
        SequenceDefinition {
            name: "Default".into(),
            trigger: TriggerType::CartAbandoned,
            steps: default_steps(),
            active: true,
        }
    }

    fn created() -> SequenceEvent {
        SequenceEvent::Created {
            definition: definition(),
            at: at(),
        }
    }

    #[test]
    fn a_sequence_is_saved_with_its_normalised_steps() {
        let mut steps = default_steps();
        steps[1].delay_min = 10; // earlier than step 1: moved after it
        let mut expected = definition();
        expected.steps[1].delay_min = 60;
        SequenceTest::with(())
            .given_no_previous_events()
            .when(SequenceCommand::Create {
                name: "  Default ".into(),
                trigger: TriggerType::CartAbandoned,
                steps,
                active: true,
                at: at(),
            })
            .then_expect_events(vec![SequenceEvent::Created {
                definition: expected,
                at: at(),
            }]);
    }

    #[test]
    fn an_invalid_sequence_is_refused_with_every_field_named() {
        let mut steps = default_steps();
        steps[0].template = String::new();
        let result = SequenceTest::with(())
            .given_no_previous_events()
            .when(SequenceCommand::Create {
                name: String::new(),
                trigger: TriggerType::CartAbandoned,
                steps,
                active: true,
                at: at(),
            })
            .inspect_result();
        let Err(SequenceError::Invalid(errors)) = result else {
            panic!("expected a refusal, got {result:?}");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "steps[0].template"]);
    }

    #[test]
    fn an_update_changes_only_what_it_names_and_a_no_op_records_nothing() {
        let mut expected = definition();
        expected.active = false;
        SequenceTest::with(())
            .given(vec![created()])
            .when(SequenceCommand::Update {
                name: None,
                trigger: None,
                steps: None,
                active: Some(false),
                at: at(),
            })
            .then_expect_events(vec![SequenceEvent::Updated {
                definition: expected,
                at: at(),
            }]);
        SequenceTest::with(())
            .given(vec![created()])
            .when(SequenceCommand::Update {
                name: Some("Default".into()),
                trigger: None,
                steps: None,
                active: None,
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn archived_and_missing_sequences_cannot_change() {
        SequenceTest::with(())
            .given(vec![created(), SequenceEvent::Archived { at: at() }])
            .when(SequenceCommand::Update {
                name: None,
                trigger: None,
                steps: Some(vec![Step {
                    channel: Channel::Sms,
                    delay_min: 30,
                    template: "sms".into(),
                    coupon: false,
                    discount: None,
                    ab_test: None,
                }]),
                active: None,
                at: at(),
            })
            .then_expect_error(SequenceError::Archived);
        SequenceTest::with(())
            .given_no_previous_events()
            .when(SequenceCommand::Archive { at: at() })
            .then_expect_error(SequenceError::NotFound);
        SequenceTest::with(())
            .given(vec![created()])
            .when(SequenceCommand::Create {
                name: "Again".into(),
                trigger: TriggerType::CartAbandoned,
                steps: default_steps(),
                active: true,
                at: at(),
            })
            .then_expect_error(SequenceError::AlreadyExists);
        SequenceTest::with(())
            .given(vec![created(), SequenceEvent::Archived { at: at() }])
            .when(SequenceCommand::Archive { at: at() })
            .then_expect_events(vec![]);
    }
}
