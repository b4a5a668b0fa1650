//! The `RecoveryTemplate` aggregate: a message template saved under a name (a step's
//! `template`), overriding the built-in one of that name. The merge tags are checked at the
//! edge before a save is accepted (the template engine lives outside the domain), so a saved
//! template always renders.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::FieldError;

/// The parts of a template: subject, preheader, HTML body, text body, SMS body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateContent {
    pub subject: String,
    #[serde(default)]
    pub preheader: String,
    pub html: String,
    pub text: String,
    #[serde(default)]
    pub sms: String,
}

/// The most characters one part may hold.
pub const MAX_PART_LEN: usize = 100_000;

/// A template name: 1–64 of a–z, 0–9, `_` and `-`.
pub fn check_template_id(id: &str) -> Result<(), FieldError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "id",
            "a template name is 1 to 64 of a-z, 0-9, _ and -",
        ))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TemplateCommand {
    Save {
        content: TemplateContent,
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TemplateEvent {
    #[serde(rename = "recovery/template_saved")]
    Saved {
        content: TemplateContent,
        at: DateTime<Utc>,
    },
    #[serde(rename = "recovery/template_deleted")]
    Deleted { at: DateTime<Utc> },
}

impl DomainEvent for TemplateEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Saved { .. } => "recovery/template_saved",
            Self::Deleted { .. } => "recovery/template_deleted",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("no template is saved under this name")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecoveryTemplate {
    content: Option<TemplateContent>,
}

impl RecoveryTemplate {
    pub fn content(&self) -> Option<&TemplateContent> {
        self.content.as_ref()
    }
}

impl Aggregate for RecoveryTemplate {
    const TYPE: &'static str = "recovery_template";
    type Command = TemplateCommand;
    type Event = TemplateEvent;
    type Error = TemplateError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            TemplateCommand::Save { content, at } => {
                let parts = [
                    &content.subject,
                    &content.preheader,
                    &content.html,
                    &content.text,
                    &content.sms,
                ];
                if parts.iter().any(|p| p.chars().count() > MAX_PART_LEN) {
                    return Err(TemplateError::Invalid(format!(
                        "a template part holds at most {MAX_PART_LEN} characters"
                    )));
                }
                if content.subject.trim().is_empty() && content.sms.trim().is_empty() {
                    return Err(TemplateError::Invalid(
                        "a template needs a subject (email) or an SMS body".into(),
                    ));
                }
                if self.content.as_ref() == Some(&content) {
                    return Ok(());
                }
                TemplateEvent::Saved { content, at }
            }
            TemplateCommand::Delete { at } => {
                if self.content.is_none() {
                    return Err(TemplateError::NotFound);
                }
                TemplateEvent::Deleted { at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TemplateEvent::Saved { content, .. } => self.content = Some(content),
            TemplateEvent::Deleted { .. } => self.content = None,
        }
    }
}
