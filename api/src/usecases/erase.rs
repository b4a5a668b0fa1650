//! Erasing a data subject on request (`POST /ocart/v1/privacy/erase`): one email address or
//! phone number. One order at every entry point: the erasure is recorded on the `Subject`
//! aggregate first (the projections blank the read tables), then the subject's key is deleted
//! before the answer; the `privacy_eraser` process manager deletes it after a crash between
//! the two. Safe to repeat.

use ocart_domain::subject::SubjectCommand;
use ocart_domain::{Email, FieldError, Phone, SubjectHash};
use ocart_projections::CommandMeta;

use super::StoreFailure;
use crate::core::Core;

/// The longest reason kept.
pub const MAX_REASON_CHARS: usize = 500;

/// What the caller asked to erase: exactly one of `email` or `phone`.
#[derive(Debug, Clone, Default)]
pub struct Erase {
    pub email: Option<String>,
    pub phone: Option<String>,
    /// Why (kept in the log and the audit log); without one, `request`.
    pub reason: Option<String>,
}

/// What the erasure did.
#[derive(Debug, Clone)]
pub struct Erased {
    /// The subject hash that was erased.
    pub subject: SubjectHash,
    /// The log position of the erasure, for read-your-writes.
    pub position: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(EraseError);

fn subject_of(core: &Core, input: &Erase) -> Result<SubjectHash, EraseError> {
    let invalid = |e| EraseError::Invalid(vec![e]);
    let subject = match (&input.email, &input.phone) {
        (Some(email), None) => core
            .vault
            .subject_for_email(&Email::parse("email", email).map_err(invalid)?),
        (None, Some(phone)) => core
            .vault
            .subject_for_phone(&Phone::parse("phone", phone).map_err(invalid)?),
        _ => {
            return Err(invalid(FieldError::new(
                "email",
                "give exactly one of email or phone",
            )))
        }
    };
    Ok(subject)
}

/// Records the erasure of the subject, then deletes its key.
pub async fn erase(core: &Core, input: Erase, meta: &CommandMeta) -> Result<Erased, EraseError> {
    let subject = subject_of(core, &input)?;
    let reason = input.reason.unwrap_or_else(|| "request".into());
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(EraseError::Invalid(vec![FieldError::new(
            "reason",
            "must be at most 500 characters",
        )]));
    }
    let command = SubjectCommand::Erase {
        at: meta.at,
        reason,
    };
    let outcome = core
        .subjects
        .execute(subject.as_str(), (subject.clone(), command), meta)
        .await
        .map_err(|e| match StoreFailure::split(e) {
            Ok(failure) => EraseError::Store(failure),
            Err(e) => EraseError::Internal(anyhow::anyhow!("the erasure was refused: {e}")),
        })?;
    // Only after the erasure is in the log.
    core.vault.erase(&subject).await?;
    Ok(Erased {
        subject,
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
        let lost = EraseError::Store(StoreFailure::Conflict("subject"));
        assert_eq!(answer(lost), (StatusCode::CONFLICT, None));
        let down = EraseError::Store(StoreFailure::Unavailable("down".into()));
        assert_eq!(
            answer(down),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let vault_down = EraseError::from(ocart_projections::VaultError::Database(
            sqlx::Error::PoolTimedOut,
        ));
        assert_eq!(
            answer(vault_down),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let invalid = EraseError::Invalid(vec![FieldError::new("email", "not an address")]);
        assert_eq!(answer(invalid).0, StatusCode::UNPROCESSABLE_ENTITY);
        let corrupt = EraseError::from(ocart_projections::VaultError::Corrupt);
        assert_eq!(answer(corrupt).0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
