//! Test mode (`recovery.test_mode`): `POST /ocart/v1/recovery/test/trigger` makes a dummy cart
//! for an address the store owner gives, marks it abandoned at once, and opens its run so the
//! first message falls due about 30 seconds later, through the same dispatcher, guards and
//! channels as any other (CartBay's "Trigger Test Flow").

use chrono::Duration;
use ocart_domain::cart::{
    cart_id_for_session, session_token_hash, CaptureCart, CartCommand, Consent,
};
use ocart_domain::recovery::{RunCommand, RunStart, Step};
use ocart_domain::{
    CartItem, CartTotals, Currency, Email, FieldError, PersonalField, Source, Stage,
};
use ocart_projections::queries::recovery as q;
use ocart_projections::{CommandError, CommandMeta};
use serde::Serialize;

use super::StoreFailure;
use crate::core::{random_secret, Core};

/// How long after the trigger the first message falls due.
pub const TEST_DELAY_SECS: i64 = 30;

/// What the store owner asked for.
#[derive(Debug, Clone)]
pub struct TriggerTest {
    /// Where the test messages go (an email address, validated here).
    pub email: String,
}

/// The test flow started.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TestFlow {
    pub cart_id: String,
    pub run_id: String,
    pub sequence_id: String,
    pub first_message_due_at: chrono::DateTime<chrono::Utc>,
    pub position: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum TestTriggerError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// `recovery.test_mode` is off.
    #[error("test mode is off: set recovery.test_mode to true first")]
    TestModeOff,
    /// No active sequence (with steps) handles abandoned carts.
    #[error("no active sequence handles abandoned carts")]
    NoSequence,
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(TestTriggerError);

/// A command failure: the store's, or the aggregate's refusal (which a fresh test cart and
/// run never meet, so it is internal).
fn command_failure<E>(err: CommandError<E>) -> TestTriggerError
where
    E: std::error::Error + Send + Sync + 'static,
{
    match StoreFailure::split(err) {
        Ok(failure) => TestTriggerError::Store(failure),
        Err(e) => TestTriggerError::Internal(anyhow::anyhow!("the test flow was refused: {e}")),
    }
}

/// Starts a test flow to `input.email`, when test mode is on and an active sequence handles
/// abandoned carts.
pub async fn trigger_test(
    core: &Core,
    input: TriggerTest,
    meta: &CommandMeta,
) -> Result<TestFlow, TestTriggerError> {
    let email =
        Email::parse("email", &input.email).map_err(|e| TestTriggerError::Invalid(vec![e]))?;
    if !core.settings().await?.recovery.test_mode {
        return Err(TestTriggerError::TestModeOff);
    }
    let Some(sequence) = q::sequence_for_trigger(&core.db, "cart_abandoned").await? else {
        return Err(TestTriggerError::NoSequence);
    };
    let steps: Vec<Step> = serde_json::from_value(sequence.steps.0.clone())
        .map_err(|e| anyhow::anyhow!("sequence {}: {e}", sequence.sequence_id))?;
    let Some(first) = steps.first() else {
        return Err(TestTriggerError::NoSequence);
    };
    let session = random_secret("test_");
    let cart_id = cart_id_for_session(&session).to_string();
    let subject = core.vault.subject_for_email(&email);
    let capture = CaptureCart {
        session_token_hash: session_token_hash(&session),
        email: PersonalField {
            sealed: core.vault.seal(&subject, email.as_str()).await?,
            subject: subject.clone(),
        },
        phone: None,
        name: None,
        name_hash: None,
        consent: Consent {
            given: Some(true),
            text: Some("OCart test flow (recovery.test_mode)".into()),
        },
        consent_required: true,
        source: Source::Api,
        stage: Stage::Checkout,
        currency: Currency::parse("currency", "USD").map_err(|e| anyhow::anyhow!("{e}"))?,
        items: vec![CartItem {
            product_id: ocart_domain::ProductId::Number(1),
            variation_id: None,
            sku: Some("OCART-TEST".into()),
            name: "Test product".into(),
            quantity: 1,
            unit_price: 1000,
            categories: vec![],
            image_url: None,
            subscription: false,
        }],
        totals: CartTotals {
            subtotal: 1000,
            total: 1000,
            ..Default::default()
        },
        at: meta.at,
    };
    core.carts
        .execute(&cart_id, CartCommand::Capture(Box::new(capture)), meta)
        .await
        .map_err(command_failure)?;
    let abandoned = core
        .carts
        .execute(
            &cart_id,
            CartCommand::MarkAbandoned {
                at: meta.at,
                threshold_min: 0,
                forced: true,
            },
            meta,
        )
        .await
        .map_err(command_failure)?;
    let event = abandoned
        .events
        .first()
        .ok_or_else(|| anyhow::anyhow!("the test cart was not abandoned"))?;
    // The run the opener would open for this abandonment (same id, so the opener's own
    // start changes nothing), dated so that step 1 falls due in 30 seconds.
    let run_id = ocart_processors::recovery::run_id_for(&cart_id, &event.event_id);
    let due = meta.at + Duration::seconds(TEST_DELAY_SECS);
    let start = RunStart {
        run_id: run_id.clone(),
        cart_id: cart_id.clone(),
        sequence_id: sequence.sequence_id.clone(),
        abandoned_at: due - Duration::minutes(first.delay_min),
        email_hash: Some(subject.as_str().to_owned()),
        phone_hash: None,
        steps,
    };
    let outcome = core
        .runs
        .execute(
            &run_id,
            RunCommand::Start {
                start: Box::new(start),
                at: meta.at,
            },
            meta,
        )
        .await
        .map_err(command_failure)?;
    Ok(TestFlow {
        cart_id,
        run_id,
        sequence_id: sequence.sequence_id,
        first_message_due_at: due,
        position: outcome.last_position(),
    })
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use ocart_domain::cart::CartError;

    use super::*;
    use crate::usecases::testing::answer;

    #[test]
    fn each_failure_has_its_status_and_an_unavailable_store_says_when_to_retry() {
        let lost = command_failure(CommandError::<CartError>::Conflict("cart"));
        assert!(matches!(
            lost,
            TestTriggerError::Store(StoreFailure::Conflict("cart"))
        ));
        assert_eq!(answer(lost), (StatusCode::CONFLICT, None));
        let down = command_failure(CommandError::<CartError>::Unavailable("down".into()));
        assert_eq!(
            answer(down),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let pool = TestTriggerError::from(ocart_projections::VaultError::Database(
            sqlx::Error::PoolTimedOut,
        ));
        assert_eq!(
            answer(pool),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        assert_eq!(
            answer(TestTriggerError::TestModeOff).0,
            StatusCode::CONFLICT
        );
        assert_eq!(answer(TestTriggerError::NoSequence).0, StatusCode::CONFLICT);
        let invalid = TestTriggerError::Invalid(vec![FieldError::new("email", "no")]);
        assert_eq!(answer(invalid).0, StatusCode::UNPROCESSABLE_ENTITY);
        let refused = command_failure(CommandError::Rejected(CartError::NotFound));
        assert_eq!(answer(refused).0, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
