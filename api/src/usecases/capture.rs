//! Capture and consent withdrawal (`POST /ocart/v1/checkout/capture`): the store's checkout
//! sends the cart of a session, and OCart keeps it (creates or updates the cart), keeps
//! nothing (no consent where consent is required), quietly keeps nothing (a suppressed shopper,
//! answered as if kept), or erases it (the shopper withdrew consent). The rule is the domain's
//! (`ocart_domain::cart::capture_decision`); this use case reads the settings and the
//! suppression list it needs, seals the personal fields, runs the cart command and, after a
//! withdrawal, deletes the withdrawn subjects' keys: the withdrawal is recorded first, then the
//! keys go, and the `privacy_eraser` process manager deletes them after a crash between the two.

use ocart_domain::cart::{
    capture_decision, cart_id_for_session, consents, session_token_hash, CaptureCart,
    CaptureDecision, CartCommand, CartError, CartEvent, CartStatus, Consent,
};
use ocart_domain::{
    CartItem, CartTotals, Currency, Email, FieldError, PersonalField, Phone, Source, Stage,
};
use ocart_projections::CommandMeta;

use super::StoreFailure;
use crate::core::{random_secret, Core};

/// A validated capture, personal fields still in clear text (they are sealed here).
#[derive(Debug, Clone)]
pub struct Capture {
    /// The checkout session; a new one is issued when absent.
    pub session_token: Option<String>,
    pub email: Email,
    pub phone: Option<Phone>,
    pub name: Option<String>,
    pub consent: Consent,
    pub source: Source,
    pub stage: Stage,
    pub currency: Currency,
    pub items: Vec<CartItem>,
    pub totals: CartTotals,
}

/// What the capture did, as the checkout may learn it: a suppressed shopper's capture reads
/// like a kept one.
#[derive(Debug, Clone)]
pub struct Captured {
    pub cart_id: String,
    /// The session token sent, or the one issued.
    pub session_token: String,
    /// Whether the capture was accepted for keeping (false without consent, and after a
    /// withdrawal).
    pub captured: bool,
    /// The cart's status after the capture; `None` when nothing was kept (no consent, nothing
    /// to withdraw).
    pub status: Option<CartStatus>,
    /// The log position of the last event written, for read-your-writes.
    pub position: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    /// The cart refuses the capture: it is converted or expired, and the checkout must start a
    /// new session. `0` says so.
    #[error("{0}")]
    Closed(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(CaptureError);

/// The cart's refusal. Capture and withdrawal are refused only by a closed cart; any other
/// refusal is answered the same way (409), with its own words.
fn refused(err: CartError) -> CaptureError {
    match err {
        CartError::Closed(status) => CaptureError::Closed(format!(
            "the cart is {status}; start a new checkout session"
        )),
        other => CaptureError::Closed(other.to_string()),
    }
}

/// Captures the session's cart, or withdraws it.
pub async fn capture(
    core: &Core,
    input: Capture,
    meta: &CommandMeta,
) -> Result<Captured, CaptureError> {
    let settings = core.settings().await?;
    let session_token = input
        .session_token
        .clone()
        .unwrap_or_else(|| random_secret(""));
    let cart_id = cart_id_for_session(&session_token).to_string();
    let vault = &core.vault;
    let email_subject = vault.subject_for_email(&input.email);
    let required = settings.recovery.consent_required;
    // Only a capture that would keep the cart asks the suppression list.
    let suppressed = consents(input.consent.given, required)
        && ocart_projections::queries::recovery::is_suppressed(&core.db, email_subject.as_str())
            .await?;
    let command = match capture_decision(input.consent.given, required, suppressed) {
        // The answer a kept cart gets, so this public endpoint tells no one who is on the
        // suppression list; the position is this instance's latest write, as good as any for
        // read-your-writes.
        CaptureDecision::IgnoreSuppressed => {
            decoy(core, &input, &session_token, &cart_id).await;
            return Ok(Captured {
                cart_id,
                session_token,
                captured: true,
                status: Some(CartStatus::Active),
                position: Some(core.log.head()),
            });
        }
        CaptureDecision::Keep => {
            let email = PersonalField {
                sealed: vault.seal(&email_subject, input.email.as_str()).await?,
                subject: email_subject.clone(),
            };
            let phone = match &input.phone {
                Some(phone) => {
                    let subject = vault.subject_for_phone(phone);
                    Some(PersonalField {
                        sealed: vault.seal(&subject, phone.as_str()).await?,
                        subject,
                    })
                }
                None => None,
            };
            let (name, name_hash) = match &input.name {
                Some(name) => (
                    Some(vault.seal(&email_subject, name).await?),
                    Some(vault.fingerprint(name)),
                ),
                None => (None, None),
            };
            CartCommand::Capture(Box::new(CaptureCart {
                session_token_hash: session_token_hash(&session_token),
                email,
                phone,
                name,
                name_hash,
                consent: input.consent,
                consent_required: required,
                source: input.source,
                stage: input.stage,
                currency: input.currency,
                items: input.items,
                totals: input.totals,
                at: meta.at,
            }))
        }
        CaptureDecision::Withdraw => CartCommand::WithdrawConsent { at: meta.at },
        // No consent and none given to be withdrawn: nothing is kept.
        CaptureDecision::NotKept => {
            return Ok(Captured {
                cart_id,
                session_token,
                captured: false,
                status: None,
                position: None,
            });
        }
    };
    let withdrawing = matches!(command, CartCommand::WithdrawConsent { .. });
    let outcome =
        core.carts.execute(&cart_id, command, meta).await.map_err(
            |e| match StoreFailure::split(e) {
                Ok(failure) => CaptureError::Store(failure),
                Err(refusal) => refused(refusal),
            },
        )?;
    if withdrawing {
        // Withdrawal erases: the data keys go, so what the log holds becomes unreadable. Only
        // after the withdrawal is in the log; the privacy eraser finishes it after a crash.
        for event in &outcome.events {
            if let CartEvent::ConsentWithdrawn { subjects, .. } = &event.event {
                for subject in subjects {
                    vault.erase(subject).await?;
                }
            }
        }
    }
    Ok(Captured {
        cart_id,
        session_token,
        captured: !withdrawing,
        status: Some(outcome.aggregate.status()),
        position: outcome.last_position(),
    })
}

/// Some of the work a kept capture does, done for a suppressed shopper and thrown away, so
/// that answer does not come back conspicuously sooner (a timing side channel telling who is
/// suppressed). It writes nothing: the subject hashes and the name's fingerprint are computed
/// as for a kept cart, and the cart is read from the log as an uncached command reads it. The
/// seals are not repeated: `Vault::seal` creates the subject's key on first use, a write (and
/// sealing a few hundred bytes costs microseconds once the key is cached), and the append of
/// a kept cart's event, a committed write and most of a kept capture's time, has no write-free
/// twin: the channel is narrowed, not closed (a suppressed capture still answers sooner). No
/// failure here changes the answer.
async fn decoy(core: &Core, input: &Capture, session_token: &str, cart_id: &str) {
    let vault = &core.vault;
    let phone = input.phone.as_ref().map(|p| vault.subject_for_phone(p));
    let name = input.name.as_deref().map(|n| vault.fingerprint(n));
    let hash = session_token_hash(session_token);
    let loaded = core.carts.load(cart_id).await.is_ok();
    std::hint::black_box((phone, name, hash, loaded));
}

#[cfg(test)]
mod tests {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    use ocart_projections::CommandError;

    use super::*;
    use crate::error::ApiError;

    fn answer(err: CaptureError) -> (StatusCode, Option<String>, String) {
        let api = ApiError::from(err);
        let detail = api.problem().detail;
        let response = api.into_response();
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        (response.status(), retry, detail)
    }

    fn failed(err: CommandError<CartError>) -> CaptureError {
        match StoreFailure::split(err) {
            Ok(failure) => CaptureError::Store(failure),
            Err(refusal) => refused(refusal),
        }
    }

    #[test]
    fn each_failure_has_its_status_and_an_unavailable_store_says_when_to_retry() {
        let invalid = CaptureError::Invalid(vec![FieldError::new("email", "no")]);
        assert_eq!(answer(invalid).0, StatusCode::UNPROCESSABLE_ENTITY);

        let (status, retry, detail) = answer(failed(CommandError::Rejected(CartError::Closed(
            "converted",
        ))));
        assert_eq!((status, retry), (StatusCode::CONFLICT, None));
        assert_eq!(
            detail,
            "the cart is converted; start a new checkout session"
        );

        let lost = failed(CommandError::Conflict("cart"));
        assert!(matches!(
            lost,
            CaptureError::Store(StoreFailure::Conflict("cart"))
        ));
        assert_eq!(answer(lost).0, StatusCode::CONFLICT);

        let down = failed(CommandError::Unavailable("down".into()));
        let (status, retry, _) = answer(down);
        assert_eq!(
            (status, retry),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let pool = CaptureError::from(sqlx::Error::PoolTimedOut);
        let (status, retry, _) = answer(pool);
        assert_eq!(
            (status, retry),
            (StatusCode::SERVICE_UNAVAILABLE, Some("1".into()))
        );
        let vault = CaptureError::from(ocart_projections::VaultError::Database(
            sqlx::Error::PoolTimedOut,
        ));
        assert_eq!(answer(vault).0, StatusCode::SERVICE_UNAVAILABLE);

        let corrupt = failed(CommandError::Corrupt("bad".into()));
        assert_eq!(answer(corrupt).0, StatusCode::INTERNAL_SERVER_ERROR);
        let internal = CaptureError::Internal(anyhow::anyhow!("boom"));
        let (status, retry, detail) = answer(internal);
        assert_eq!((status, retry), (StatusCode::INTERNAL_SERVER_ERROR, None));
        assert!(!detail.contains("boom"), "{detail}");
        assert_eq!(
            answer(CaptureError::from(ocart_projections::VaultError::Corrupt)).0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
