//! One-click and page unsubscribe (`GET`/`POST /u/{token}`): the link a token names, and
//! the unsubscribe itself — the link's recipient suppressed on the link's channel (reason
//! `unsubscribe`, the message key as source) and every open run that messages them stopped.
//! The rate limits of unsubscribe links are the handler's (they sit between the look-up and
//! the unsubscribe).

use ocart_domain::recovery::{Channel, SuppressionReason};
use ocart_projections::queries::recovery::{self as q, LinkRow};
use ocart_projections::CommandMeta;
use sha2::{Digest, Sha256};

use super::suppress::{suppress, Recipient, Suppress, SuppressError};
use super::StoreFailure;
use crate::core::Core;

/// What an unsubscribe did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsubscribed {
    /// The recipient is suppressed and their runs stopped; the log position of the last event
    /// written, if any, for read-your-writes.
    Done { position: Option<i64> },
    /// The link names no recipient (its shopper was erased): nothing to suppress.
    NoRecipient,
}

#[derive(Debug, thiserror::Error)]
pub enum UnsubscribeError {
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(UnsubscribeError);

/// The unsubscribe link whose token is `token`, if it is one of ours.
pub async fn find_link(core: &Core, token: &str) -> Result<Option<LinkRow>, UnsubscribeError> {
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    Ok(q::link_by_hash(&core.db, "unsubscribe", &hash).await?)
}

/// Unsubscribes the recipient of `link` (from [`find_link`]): suppresses them on the link's
/// channel and stops every open run that messages them. Safe to repeat.
pub async fn unsubscribe(
    core: &Core,
    link: &LinkRow,
    meta: &CommandMeta,
) -> Result<Unsubscribed, UnsubscribeError> {
    let Some(recipient) = link.recipient_hash.as_deref() else {
        return Ok(Unsubscribed::NoRecipient);
    };
    let channel = match link.channel.as_str() {
        "sms" => Channel::Sms,
        _ => Channel::Email,
    };
    let input = Suppress {
        recipient: Recipient::hash(recipient),
        reason: SuppressionReason::Unsubscribe,
        channel: Some(channel),
        source: Some(link.message_key.clone()),
    };
    let suppressed = suppress(core, input, meta).await.map_err(|e| match e {
        SuppressError::Store(failure) => UnsubscribeError::Store(failure),
        SuppressError::Internal(err) => UnsubscribeError::Internal(err),
        // A link's recipient is a subject hash, suppressing never asks for a suppression.
        other @ (SuppressError::Invalid(_) | SuppressError::NotSuppressed) => {
            UnsubscribeError::Internal(anyhow::anyhow!("unsubscribing failed: {other}"))
        }
    })?;
    Ok(Unsubscribed::Done {
        position: suppressed.position,
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::usecases::testing::answer;

    #[test]
    fn a_lost_race_is_409_and_an_unavailable_store_503_with_retry_after() {
        let lost = UnsubscribeError::Store(StoreFailure::Conflict("suppression"));
        assert_eq!(answer(lost).0, StatusCode::CONFLICT);
        let down = UnsubscribeError::Store(StoreFailure::Unavailable("down".into()));
        assert_eq!(
            answer(down),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let pool = UnsubscribeError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(
            answer(pool),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
    }
}
