//! What happens to a message after it is sent: provider reports (delivery, bounce,
//! complaint; `POST /ocart/v1/webhooks/deliverability`) and opens (the pixel), recorded on the
//! run. A hard bounce or a complaint suppresses the recipient and stops their runs: the
//! recovery follow-ups (`processors::recovery::followups`) do that when they reach the
//! recorded report, so a replay gets the same effect. Safe to repeat: a provider's retry
//! records nothing.

use ocart_domain::recovery::{DeliveryReport, RunCommand};
use ocart_projections::queries::recovery as q;
use ocart_projections::CommandMeta;

use super::StoreFailure;
use crate::core::Core;

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reported {
    /// Recorded (a hard bounce or complaint then suppresses the recipient, by the follow-ups).
    Recorded,
    /// Already recorded: a provider's retry.
    Repeated,
    /// No message of ours has this key.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportDeliveryError {
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(ReportDeliveryError);

/// Records `report` about the message `message_key`.
pub async fn report_delivery(
    core: &Core,
    message_key: &str,
    report: DeliveryReport,
    meta: &CommandMeta,
) -> Result<Reported, ReportDeliveryError> {
    let Some(message) = q::message_by_key(&core.db, message_key).await? else {
        return Ok(Reported::Unknown);
    };
    let command = RunCommand::ReportDelivery {
        message_key: message_key.to_owned(),
        report,
        at: meta.at,
    };
    let outcome = match core.runs.execute(&message.run_id, command, meta).await {
        Ok(outcome) => outcome,
        Err(e) => {
            return match StoreFailure::split(e) {
                Ok(failure) => Err(failure.into()),
                // The run knows no such message.
                Err(_) => Ok(Reported::Unknown),
            };
        }
    };
    if outcome.events.is_empty() {
        return Ok(Reported::Repeated);
    }
    Ok(Reported::Recorded)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;
    use crate::usecases::testing::answer;

    #[test]
    fn a_lost_race_is_409_and_an_unavailable_store_503_with_retry_after() {
        let lost = ReportDeliveryError::Store(StoreFailure::Conflict("recovery_run"));
        assert_eq!(answer(lost), (StatusCode::CONFLICT, None));
        let down = ReportDeliveryError::Store(StoreFailure::Unavailable("down".into()));
        assert_eq!(
            answer(down),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let pool = ReportDeliveryError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(
            answer(pool),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let corrupt = ReportDeliveryError::Store(StoreFailure::Corrupt("bad".into()));
        assert_eq!(answer(corrupt).0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
