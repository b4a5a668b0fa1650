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
    /// Shoppers' emails, phone numbers and names in clear; without it reads mask them.
    OcartViewPersonalData,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Self::OcartManage,
        Self::OcartManageFunnels,
        Self::OcartManageOffers,
        Self::OcartManageRecovery,
        Self::OcartManageTests,
        Self::OcartViewReports,
        Self::OcartRunMigration,
        Self::OcartViewPersonalData,
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
            Self::OcartViewPersonalData => "ocart_view_personal_data",
        }
    }

    /// Whether holding `self` grants `other`: every capability grants itself, and the admin
    /// capability `ocart_manage` also grants seeing personal data.
    pub fn grants(self, other: Capability) -> bool {
        self == other || (self == Self::OcartManage && other == Self::OcartViewPersonalData)
    }

    /// Whether a token holding `held` may see shoppers' personal data in clear.
    pub fn sees_personal_data(held: &[Capability]) -> bool {
        held.iter().any(|c| c.grants(Self::OcartViewPersonalData))
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

/// The token aggregates' type in the log.
pub const TOKEN_TYPE: &str = "token";

impl Aggregate for ApiToken {
    const TYPE: &'static str = TOKEN_TYPE;
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

#[cfg(test)]
mod tests {
    use super::Capability::{self, *};

    #[test]
    fn capability_rules() {
        let rows: &[(&str, &[Capability], bool)] = &[
            (
                "a token with only ocart_view_reports does not see personal data",
                &[OcartViewReports],
                false,
            ),
            (
                "a token with ocart_view_personal_data sees personal data",
                &[OcartViewReports, OcartViewPersonalData],
                true,
            ),
            (
                "the admin capability ocart_manage implies seeing personal data",
                &[OcartManage],
                true,
            ),
            (
                "managing recovery does not imply seeing personal data",
                &[OcartManageRecovery, OcartManageTests, OcartRunMigration],
                false,
            ),
            ("a token with no capability sees nothing", &[], false),
        ];
        for (rule, held, sees) in rows {
            assert_eq!(Capability::sees_personal_data(held), *sees, "{rule}");
        }
    }

    #[test]
    fn every_capability_round_trips_through_its_wire_name() {
        for cap in Capability::ALL {
            assert_eq!(Capability::parse(cap.as_str()), Some(cap));
            let json = serde_json::to_string(&cap).unwrap();
            assert_eq!(json, format!("\"{}\"", cap.as_str()));
        }
        assert_eq!(
            Capability::parse("ocart_view_personal_data"),
            Some(OcartViewPersonalData)
        );
    }
}
