//! Rotating a gateway secret (`ocart gateway rotate`, ADR 0016): the `GatewaySecrets`
//! aggregate numbers the new version and records `gateway/secret_rotated` (purpose, version,
//! when the earlier versions retire; never the secret, so the audit log shows who rotated what
//! and when), then the secret is stored sealed in `gateway_secrets` and every earlier version
//! — the config file's, version 0, included — is given its retirement time, in one
//! transaction.

use chrono::{DateTime, Duration, Utc};
use ocart_domain::gateway_secret::{GatewaySecretCommand, GatewaySecretError, SecretPurpose};
use ocart_domain::FieldError;
use ocart_projections::{exec_tx, CommandMeta};

use super::StoreFailure;
use crate::core::Core;
use crate::secret_ring;

/// The longest secret accepted on standard input.
pub const MAX_SECRET_LEN: usize = 512;

/// A rotation done.
#[derive(Debug)]
pub struct Rotated {
    pub purpose: SecretPurpose,
    pub version: u32,
    /// From then on the earlier versions are refused.
    pub previous_retire_at: DateTime<Utc>,
    /// The new secret, for the operator to paste where the other side needs it; only a secret
    /// OCart generated for a webhook (WooCommerce) is handed back, once.
    pub shown_once: Option<String>,
    pub position: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Rejected(#[from] GatewaySecretError),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(RotateError);

fn invalid(field: &str, message: &str) -> RotateError {
    RotateError::Invalid(vec![FieldError::new(field, message)])
}

/// A Stripe webhook signing secret as the dashboard shows it: `whsec_` and printable ASCII,
/// no spaces. Surrounding whitespace (the newline of a pipe) is dropped.
pub fn check_stripe_secret(raw: &str) -> Result<String, RotateError> {
    let secret = raw.trim();
    if secret.is_empty() {
        return Err(invalid("secret", "nothing was read from standard input"));
    }
    if secret.len() > MAX_SECRET_LEN || !secret.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Err(invalid(
            "secret",
            "must be printable ASCII without spaces, at most 512 characters",
        ));
    }
    if !secret.starts_with("whsec_") {
        return Err(invalid(
            "secret",
            "a Stripe webhook signing secret starts with whsec_ (Developers > Webhooks > the endpoint > Roll secret)",
        ));
    }
    Ok(secret.to_owned())
}

/// The default overlap of `purpose`: 24 hours for the webhooks, a token's lifetime
/// (`upsells.one_click_token_ttl_min`) for the upsell key.
pub async fn default_overlap(core: &Core, purpose: SecretPurpose) -> Result<Duration, RotateError> {
    Ok(match purpose {
        SecretPurpose::UpsellToken => Duration::minutes(i64::from(
            core.settings().await?.upsells.one_click_token_ttl_min,
        )),
        _ => Duration::hours(24),
    })
}

/// Rotates `purpose`: `supplied` is the new secret for Stripe (which generates it itself);
/// WooCommerce's secret and the upsell key are generated here.
pub async fn rotate(
    core: &Core,
    purpose: SecretPurpose,
    overlap: Duration,
    supplied: Option<String>,
    meta: &CommandMeta,
) -> Result<Rotated, RotateError> {
    let secret = match (purpose, supplied) {
        (SecretPurpose::StripeWebhook, Some(raw)) => check_stripe_secret(&raw)?,
        (SecretPurpose::StripeWebhook, None) => {
            return Err(invalid(
                "secret",
                "Stripe generates the secret: roll it in the dashboard and pass it on standard input (--secret-stdin)",
            ))
        }
        (_, Some(_)) => {
            return Err(invalid(
                "secret",
                "only stripe-webhook takes a secret; this one is generated",
            ))
        }
        (_, None) => secret_ring::generate(),
    };
    let outcome = core
        .gateway_secrets
        .execute(
            purpose.as_str(),
            GatewaySecretCommand::Rotate {
                purpose,
                overlap,
                at: meta.at,
            },
            meta,
        )
        .await
        .map_err(|e| match StoreFailure::split(e) {
            Ok(failure) => RotateError::Store(failure),
            Err(rejected) => RotateError::Rejected(rejected),
        })?;
    let (version, previous_retire_at) = match outcome.events.last().map(|e| &e.event) {
        Some(ocart_domain::gateway_secret::GatewaySecretEvent::Rotated {
            version,
            previous_retire_at,
            ..
        }) => (*version, *previous_retire_at),
        None => return Err(anyhow::anyhow!("the rotation recorded nothing").into()),
    };
    let db_version = i32::try_from(version).map_err(|_| GatewaySecretError::TooManyVersions)?;
    let sealed = secret_ring::seal(&core.vault, purpose, version, secret.as_bytes());
    let mut tx = core.db.begin().await?;
    // Version 0, the config file's secret: only when it retires.
    exec_tx!(
        &mut tx,
        "INSERT INTO gateway_secrets (purpose, version, sealed, created_at, retire_at) \
         VALUES ($1, 0, NULL, $2, NULL) ON CONFLICT (purpose, version) DO NOTHING",
        purpose.as_str(),
        meta.at
    )?;
    let earlier: Vec<(i32, Option<DateTime<Utc>>)> = match &mut tx {
        ocart_projections::Tx::Pg(t) => sqlx::query_as(
            "SELECT version, retire_at FROM gateway_secrets WHERE purpose = $1 AND version < $2",
        )
        .bind(purpose.as_str())
        .bind(db_version)
        .fetch_all(&mut **t)
        .await?,
        ocart_projections::Tx::Lite(t) => {
            sqlx::query_as(
                "SELECT version, retire_at FROM gateway_secrets WHERE purpose = ? AND version < ?",
            )
            .bind(purpose.as_str())
            .bind(db_version)
            .fetch_all(&mut **t)
            .await?
        }
    };
    for (v, retire_at) in earlier {
        // A version already retiring earlier keeps its earlier time.
        if retire_at.is_some_and(|at| at <= previous_retire_at) {
            continue;
        }
        exec_tx!(
            &mut tx,
            "UPDATE gateway_secrets SET retire_at = $1 WHERE purpose = $2 AND version = $3",
            previous_retire_at,
            purpose.as_str(),
            v
        )?;
    }
    exec_tx!(
        &mut tx,
        "INSERT INTO gateway_secrets (purpose, version, sealed, created_at, retire_at) \
         VALUES ($1, $2, $3, $4, NULL)",
        purpose.as_str(),
        db_version,
        sealed,
        meta.at
    )?;
    tx.commit().await?;
    core.secret_ring.reload().await?;
    Ok(Rotated {
        purpose,
        version,
        previous_retire_at,
        shown_once: (purpose == SecretPurpose::WoocommerceWebhook).then_some(secret),
        position: outcome.last_position().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stripe_secret_is_checked_before_anything_is_stored() {
        let cases: &[(&str, &str, bool)] = &[
            ("a dashboard secret", "whsec_abc123", true),
            ("with the pipe's newline", "whsec_abc123\n", true),
            ("empty", "", false),
            ("only a newline", "\n", false),
            ("an API key pasted by mistake", "sk_live_abc", false),
            ("a space inside", "whsec_abc 123", false),
            ("multi-byte text", "whsec_é", false),
        ];
        for (name, raw, ok) in cases {
            assert_eq!(check_stripe_secret(raw).is_ok(), *ok, "{name}");
        }
        let long = format!("whsec_{}", "a".repeat(MAX_SECRET_LEN));
        assert!(check_stripe_secret(&long).is_err());
        let err = check_stripe_secret("sk_live_abc").unwrap_err().to_string();
        assert!(!err.contains("sk_live_abc"), "never echoed: {err}");
    }
}
