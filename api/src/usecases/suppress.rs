//! The suppression list: adding a recipient (`POST /recovery/suppression`, `ocart recovery
//! suppression add`, an unsubscribe link) and lifting the suppression (`DELETE
//! /recovery/suppression`, `ocart recovery suppression remove`). A recipient is keyed by the
//! subject hash of their email address or phone number; only the hash is kept.
//!
//! Adding is safe to repeat (the aggregate records a suppression once) and stops every open
//! run that messages the recipient at once, so no claim can follow even before the read tables
//! catch up. Lifting leaves runs already stopped stopped.

use ocart_domain::recovery::{
    Channel, RunCommand, StopReason, SuppressionCommand, SuppressionError, SuppressionReason,
};
use ocart_domain::FieldError;
use ocart_projections::{CommandError, CommandMeta};

use super::StoreFailure;
use crate::core::Core;

/// Whom a suppression is about, as the caller gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// An email address or an E.164 phone number; `field` names it in errors.
    Address { field: &'static str, raw: String },
    /// A subject hash as the suppression list shows it (64 hex digits); `field` names it in
    /// errors.
    Hash { field: &'static str, raw: String },
}

impl Recipient {
    /// An email address or an E.164 phone number given as `recipient`.
    pub fn address(raw: impl Into<String>) -> Self {
        Self::Address {
            field: "recipient",
            raw: raw.into(),
        }
    }

    /// A subject hash given as `recipient_hash`.
    pub fn hash(raw: impl Into<String>) -> Self {
        Self::Hash {
            field: "recipient_hash",
            raw: raw.into(),
        }
    }

    /// Exactly one of an address (`recipient`) or a hash (`recipient_hash`).
    pub fn one_of(address: Option<String>, hash: Option<String>) -> Result<Self, SuppressError> {
        match (address, hash) {
            (Some(raw), None) => Ok(Self::address(raw)),
            (None, Some(raw)) => Ok(Self::hash(raw)),
            _ => Err(SuppressError::Invalid(vec![FieldError::new(
                "recipient",
                "give recipient (an email or phone) or recipient_hash, not both",
            )])),
        }
    }

    /// The subject hash the suppression is keyed by.
    pub fn subject_hash(&self, core: &Core) -> Result<String, SuppressError> {
        match self {
            Self::Address { field, raw } => core
                .recipient_hash(field, raw)
                .map_err(|e| SuppressError::Invalid(vec![e])),
            Self::Hash { field, raw } => {
                let raw = raw.trim();
                if raw.len() == 64 && raw.chars().all(|c| c.is_ascii_hexdigit()) {
                    Ok(raw.to_ascii_lowercase())
                } else {
                    Err(SuppressError::Invalid(vec![FieldError::new(
                        *field,
                        "must be the 64-character hex hash the suppression list shows",
                    )]))
                }
            }
        }
    }
}

/// A suppression to add.
#[derive(Debug, Clone)]
pub struct Suppress {
    pub recipient: Recipient,
    pub reason: SuppressionReason,
    /// The channel it applies to; `None`: every channel.
    pub channel: Option<Channel>,
    /// What caused it: a message key, `admin`, `cli`.
    pub source: Option<String>,
}

/// What adding or lifting did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub recipient_hash: String,
    /// Whether the recipient is suppressed now.
    pub suppressed: bool,
    /// The log position of the last event written, if any, for read-your-writes.
    pub position: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SuppressError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// Lifting a suppression the recipient does not have.
    #[error("the recipient is not suppressed")]
    NotSuppressed,
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(SuppressError);

impl SuppressError {
    fn of_command<E: std::error::Error + Send + Sync + 'static>(
        err: CommandError<E>,
        rejected: impl FnOnce(E) -> Self,
    ) -> Self {
        match StoreFailure::split(err) {
            Ok(failure) => Self::Store(failure),
            Err(e) => rejected(e),
        }
    }
}

/// Suppresses the recipient and stops every open run that messages them.
pub async fn suppress(
    core: &Core,
    input: Suppress,
    meta: &CommandMeta,
) -> Result<Suppressed, SuppressError> {
    let recipient_hash = input.recipient.subject_hash(core)?;
    let command = SuppressionCommand::Suppress {
        reason: input.reason,
        channel: input.channel,
        source: input.source,
        at: meta.at,
    };
    let outcome = core
        .suppressions
        .execute(&recipient_hash, command, meta)
        .await
        .map_err(|e| {
            SuppressError::of_command(e, |e: SuppressionError| {
                SuppressError::Internal(anyhow::anyhow!("suppressing refused: {e}"))
            })
        })?;
    let mut position = outcome.last_position();
    let stop_reason = if input.reason == SuppressionReason::Unsubscribe {
        StopReason::Unsubscribed
    } else {
        StopReason::Suppressed
    };
    let runs =
        ocart_projections::queries::recovery::open_runs_of_recipient(&core.db, &recipient_hash)
            .await?;
    for run in runs {
        let stop = RunCommand::Stop {
            reason: stop_reason,
            at: meta.at,
        };
        match core.runs.execute(&run.run_id, stop, meta).await {
            Ok(outcome) => position = outcome.last_position().or(position),
            Err(e) => {
                // A rejection: the run ended meanwhile, nothing left to stop.
                if let Ok(failure) = StoreFailure::split(e) {
                    return Err(failure.into());
                }
            }
        }
    }
    Ok(Suppressed {
        recipient_hash,
        suppressed: true,
        position,
    })
}

/// Lifts the recipient's suppression. `NotSuppressed` when they have none.
pub async fn lift(
    core: &Core,
    recipient: Recipient,
    meta: &CommandMeta,
) -> Result<Suppressed, SuppressError> {
    let recipient_hash = recipient.subject_hash(core)?;
    let outcome = core
        .suppressions
        .execute(
            &recipient_hash,
            SuppressionCommand::Lift { at: meta.at },
            meta,
        )
        .await
        .map_err(|e| {
            SuppressError::of_command(e, |SuppressionError::NotSuppressed| {
                SuppressError::NotSuppressed
            })
        })?;
    Ok(Suppressed {
        recipient_hash,
        suppressed: false,
        position: outcome.last_position(),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::usecases::testing::answer;

    #[test]
    fn each_failure_has_its_status_and_an_unavailable_store_says_when_to_retry() {
        let lost = SuppressError::of_command(
            CommandError::<SuppressionError>::Conflict("suppression"),
            |_| SuppressError::NotSuppressed,
        );
        assert!(matches!(
            lost,
            SuppressError::Store(StoreFailure::Conflict("suppression"))
        ));
        assert_eq!(answer(lost), (StatusCode::CONFLICT, None));
        let down = SuppressError::of_command(
            CommandError::<SuppressionError>::Unavailable("down".into()),
            |_| SuppressError::NotSuppressed,
        );
        assert_eq!(
            answer(down),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        assert_eq!(
            answer(SuppressError::from(sqlx::Error::PoolTimedOut)),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let refused = SuppressError::of_command(
            CommandError::Rejected(SuppressionError::NotSuppressed),
            |SuppressionError::NotSuppressed| SuppressError::NotSuppressed,
        );
        assert_eq!(answer(refused).0, StatusCode::NOT_FOUND);
        let invalid = Recipient::one_of(Some("a@example.com".into()), Some("ab".into()));
        assert_eq!(
            answer(invalid.unwrap_err()).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let corrupt = SuppressError::Store(StoreFailure::Corrupt("bad".into()));
        assert_eq!(answer(corrupt).0, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn exactly_one_of_an_address_or_a_hash_names_the_recipient() {
        assert_eq!(
            Recipient::one_of(Some("a@example.com".into()), None).unwrap(),
            Recipient::address("a@example.com")
        );
        assert_eq!(
            Recipient::one_of(None, Some("ab".into())).unwrap(),
            Recipient::hash("ab")
        );
        for (address, hash) in [(None, None), (Some("a@example.com"), Some("ab"))] {
            let Err(SuppressError::Invalid(errors)) =
                Recipient::one_of(address.map(Into::into), hash.map(Into::into))
            else {
                panic!("{address:?} and {hash:?} were accepted");
            };
            assert_eq!(errors[0].field, "recipient");
        }
    }
}
