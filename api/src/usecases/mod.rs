//! The application layer: one use case per file, between the edges (HTTP handlers, CLI
//! commands) and the log. A use case takes validated input and a `CommandMeta`, runs the
//! commands and reads it needs, and answers a typed error of its own whose variants are the
//! kinds every caller must tell apart: invalid input, not found, a conflict (a closed
//! aggregate, a race lost after every retry), the store unavailable (retry), or an internal
//! failure. `crate::error` maps each use case's error to a problem document, once; the CLI
//! prints it. Handlers and CLI commands only translate to and from the use case.

/// A/B tests: CRUD, start and stop, results and sample size (`/tests`, `ocart test`).
pub mod abtests;
/// Step visits for the funnel report: the hosted upsell page's `upsell/shown`.
pub mod funnel_visits;

/// Assigning units to running A/B tests on the hot paths (held in Core).
pub mod assign;

/// Order bumps at checkout: eligibility with quotes, shown / accepted / declined.
pub mod bumps;
/// Capturing a cart at checkout, and withdrawing consent (the same public endpoint).
pub mod capture;
/// Marking a cart converted by an admin: the same order path as an order signal.
pub mod convert;
/// Erasing a data subject (privacy request).
pub mod erase;
/// Funnels: CRUD, activation, archiving, and the checkout's resolve.
pub mod funnels;
/// Defining offers: bumps, upsells and downsells (create, update, archive).
pub mod offers;
/// A payment gateway's webhook about an upsell charge (Stripe).
pub mod payment_webhook;
/// Recording an order signal (order API, WooCommerce webhook).
pub mod record_order;
/// Reporting a delivery event (bounce, complaint, delivered) from the mail provider.
pub mod report_delivery;
/// Opening a restore link.
pub mod restore;
/// `ocart gateway rotate`: a new webhook secret or upsell key version, sealed.
pub mod rotate_secret;
/// The A/B test calculator: compare arms, sample sizes (`/stats`, `ocart test calc`).
pub mod stats;
/// Adding to and lifting from the suppression list.
pub mod suppress;
/// Sending a test message of a sequence step.
pub mod test_trigger;
/// One-click and page unsubscribe.
pub mod unsubscribe;
/// One-click upsells: tokens, accept and decline, confirm after SCA, reads and refunds.
pub mod upsells;

use ocart_projections::CommandError;

/// How a command failed, apart from the aggregate's own refusal: what every use case's error
/// keeps of a `CommandError`.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    /// A race lost after every retry (409).
    #[error("the {0} was changed by concurrent requests; retry")]
    Conflict(&'static str),
    /// The log is unavailable (503, retry).
    #[error("{0}")]
    Unavailable(String),
    /// A stored event cannot be read (500).
    #[error("a stored event cannot be read: {0}")]
    Corrupt(String),
}

impl StoreFailure {
    /// Splits a command failure into the aggregate's refusal (`Err`) and the store's failure.
    pub fn split<E: std::error::Error>(err: CommandError<E>) -> Result<Self, E> {
        match err {
            CommandError::Rejected(e) => Err(e),
            CommandError::Conflict(what) => Ok(Self::Conflict(what)),
            CommandError::Unavailable(msg) => Ok(Self::Unavailable(msg)),
            CommandError::Corrupt(msg) => Ok(Self::Corrupt(msg)),
        }
    }
}

impl StoreFailure {
    /// A database failure the caller should retry (a timed-out pool, a broken connection) as
    /// `Unavailable`; any other stays the database's error.
    pub fn of_database(err: sqlx::Error) -> Result<Self, sqlx::Error> {
        match err {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => Ok(Self::Unavailable(
                "the database is unavailable; retry shortly".into(),
            )),
            other => Err(other),
        }
    }
}

/// Gives a use case's error (with variants `Store(StoreFailure)` and `Internal(anyhow::Error)`)
/// its conversions from database and key-vault errors: a database to retry is `Unavailable`
/// (503 with Retry-After), anything else internal (500).
macro_rules! database_errors {
    ($error:ty) => {
        impl From<sqlx::Error> for $error {
            fn from(err: sqlx::Error) -> Self {
                match $crate::usecases::StoreFailure::of_database(err) {
                    Ok(failure) => Self::Store(failure),
                    Err(other) => Self::Internal(other.into()),
                }
            }
        }

        impl From<ocart_projections::VaultError> for $error {
            fn from(err: ocart_projections::VaultError) -> Self {
                match err {
                    ocart_projections::VaultError::Database(e) => e.into(),
                    other => Self::Internal(other.into()),
                }
            }
        }
    };
}
pub(crate) use database_errors;

#[cfg(test)]
pub(crate) mod testing {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;

    use super::StoreFailure;
    use crate::error::ApiError;

    /// The status an error answers with, and its `Retry-After`.
    pub type Answer = (StatusCode, Option<String>);

    /// The status and `Retry-After` an error answers with.
    pub fn answer(err: impl Into<ApiError>) -> Answer {
        let response = err.into().into_response();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        (response.status(), retry)
    }

    /// What every use case's error answers for a store failure: a lost race 409, an unavailable
    /// store (or database, or vault database) 503 with `Retry-After`, a corrupt event or any
    /// other database error 500.
    pub fn store_failures_answer_alike<E>(use_case: &str)
    where
        E: From<StoreFailure> + From<sqlx::Error> + From<ocart_projections::VaultError>,
        ApiError: From<E>,
    {
        let retry = Some("1".to_owned());
        let cases: Vec<(&str, E, Answer)> = vec![
            (
                "a race lost after every retry is a conflict",
                E::from(StoreFailure::Conflict("cart")),
                (StatusCode::CONFLICT, None),
            ),
            (
                "an unavailable log says when to retry",
                E::from(StoreFailure::Unavailable("down".into())),
                (StatusCode::SERVICE_UNAVAILABLE, retry.clone()),
            ),
            (
                "a timed-out database pool says when to retry",
                E::from(sqlx::Error::PoolTimedOut),
                (StatusCode::SERVICE_UNAVAILABLE, retry.clone()),
            ),
            (
                "a broken database connection says when to retry",
                E::from(sqlx::Error::Io(std::io::ErrorKind::BrokenPipe.into())),
                (StatusCode::SERVICE_UNAVAILABLE, retry.clone()),
            ),
            (
                "an unavailable vault database says when to retry",
                E::from(ocart_projections::VaultError::Database(
                    sqlx::Error::PoolTimedOut,
                )),
                (StatusCode::SERVICE_UNAVAILABLE, retry),
            ),
            (
                "a corrupt stored event is internal",
                E::from(StoreFailure::Corrupt("bad".into())),
                (StatusCode::INTERNAL_SERVER_ERROR, None),
            ),
            (
                "another database error is internal",
                E::from(sqlx::Error::RowNotFound),
                (StatusCode::INTERNAL_SERVER_ERROR, None),
            ),
        ];
        for (name, err, expected) in cases {
            assert_eq!(answer(ApiError::from(err)), expected, "{use_case}: {name}");
        }
    }

    #[test]
    fn every_use_case_answers_store_failures_alike() {
        use super::*;
        store_failures_answer_alike::<abtests::TestsError>("abtests");
        store_failures_answer_alike::<bumps::BumpsError>("bumps");
        store_failures_answer_alike::<capture::CaptureError>("capture");
        store_failures_answer_alike::<offers::OffersError>("offers");
        store_failures_answer_alike::<convert::ConvertError>("convert");
        store_failures_answer_alike::<erase::EraseError>("erase");
        store_failures_answer_alike::<funnels::FunnelsError>("funnels");
        store_failures_answer_alike::<payment_webhook::PaymentWebhookError>("payment_webhook");
        store_failures_answer_alike::<record_order::RecordOrderError>("record_order");
        store_failures_answer_alike::<report_delivery::ReportDeliveryError>("report_delivery");
        store_failures_answer_alike::<restore::RestoreError>("restore");
        store_failures_answer_alike::<suppress::SuppressError>("suppress");
        store_failures_answer_alike::<test_trigger::TestTriggerError>("test_trigger");
        store_failures_answer_alike::<unsubscribe::UnsubscribeError>("unsubscribe");
        store_failures_answer_alike::<upsells::UpsellsError>("upsells");
    }
}
