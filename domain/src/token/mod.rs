//! The `ApiToken` aggregate. The secret is shown once by the edge and only its sha256 is kept.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// What a bearer token may do. Names follow OCart's capability reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    OcartManage,
    OcartManageFunnels,
    OcartManageOffers,
    OcartManageRecovery,
    OcartManageTests,
    OcartViewReports,
    OcartRunMigration,
}

impl Capability {
    pub const ALL: [Capability; 7] = [
        Self::OcartManage,
        Self::OcartManageFunnels,
        Self::OcartManageOffers,
        Self::OcartManageRecovery,
        Self::OcartManageTests,
        Self::OcartViewReports,
        Self::OcartRunMigration,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OcartManage => "ocart_manage",
            Self::OcartManageFunnels => "ocart_manage_funnels",
            Self::OcartManageOffers => "ocart_manage_offers",
            Self::OcartManageRecovery => "ocart_manage_recovery",
            Self::OcartManageTests => "ocart_manage_tests",
            Self::OcartViewReports => "ocart_view_reports",
            Self::OcartRunMigration => "ocart_run_migration",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == raw.trim())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TokenCommand {
    Create {
        name: String,
        capabilities: Vec<Capability>,
        token_hash: String,
        at: DateTime<Utc>,
    },
    Revoke {
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TokenEvent {
    #[serde(rename = "token/created")]
    Created {
        name: String,
        capabilities: Vec<Capability>,
        token_hash: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "token/revoked")]
    Revoked { at: DateTime<Utc> },
}

impl DomainEvent for TokenEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created { .. } => "token/created",
            Self::Revoked { .. } => "token/revoked",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("a token with this id already exists")]
    AlreadyExists,
    #[error("no such token")]
    NotFound,
    #[error("the token name must be 1 to 100 characters")]
    BadName,
    #[error("a token needs at least one capability")]
    NoCapability,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    created: bool,
    revoked: bool,
}

impl Aggregate for ApiToken {
    const TYPE: &'static str = "token";
    type Command = TokenCommand;
    type Event = TokenEvent;
    type Error = TokenError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            TokenCommand::Create {
                name,
                mut capabilities,
                token_hash,
                at,
            } => {
                if self.created {
                    return Err(TokenError::AlreadyExists);
                }
                let name = name.trim().to_owned();
                if name.is_empty() || name.chars().count() > 100 {
                    return Err(TokenError::BadName);
                }
                capabilities.sort();
                capabilities.dedup();
                if capabilities.is_empty() {
                    return Err(TokenError::NoCapability);
                }
                TokenEvent::Created {
                    name,
                    capabilities,
                    token_hash,
                    at,
                }
            }
            TokenCommand::Revoke { at } => {
                if !self.created {
                    return Err(TokenError::NotFound);
                }
                if self.revoked {
                    return Ok(());
                }
                TokenEvent::Revoked { at }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TokenEvent::Created { .. } => self.created = true,
            TokenEvent::Revoked { .. } => self.revoked = true,
        }
    }
}
