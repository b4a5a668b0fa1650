//! Stripe's webhook signature (`Stripe-Signature: t=…,v1=…,v1=…`), as Stripe documents it:
//! the signed payload is `{t}.{raw body}`, each `v1` is the hex HMAC-SHA256 of it under the
//! endpoint's signing secret, several `v1` may be present while a secret rolls, other schemes
//! (`v0`) are ignored, and a timestamp further than the tolerance (300 s) from now is refused so
//! a captured delivery cannot be replayed later. Comparison is constant-time (`Mac::verify_slice`).
//! The webhook route (issue 11) calls [`verify`] on the raw body before parsing it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's default tolerance between the signature's timestamp and now.
pub const TOLERANCE_SECS: i64 = 300;

/// Why a delivery's signature was refused (each a 401 problem document at the route).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing a timestamp (t=) or a v1 signature")]
    Malformed,
    #[error("the Stripe-Signature timestamp is outside the {TOLERANCE_SECS} s tolerance")]
    OutsideTolerance,
    #[error("no v1 signature matches the payload under the configured signing secrets")]
    NoMatch,
}

/// Verifies `header` over `body` at `now` (Unix seconds) under any of `secrets` (the current
/// signing secret and, while rotating, the previous one).
pub fn verify(header: &str, body: &[u8], secrets: &[&str], now: i64) -> Result<(), SignatureError> {
    let mut timestamp: Option<&str> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(value),
            "v1" => {
                if let Ok(sig) = hex::decode(value) {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    let (Some(t), false) = (timestamp, signatures.is_empty()) else {
        return Err(SignatureError::Malformed);
    };
    let at: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    if now
        .checked_sub(at)
        .is_none_or(|age| age.abs() > TOLERANCE_SECS)
    {
        return Err(SignatureError::OutsideTolerance);
    }
    for secret in secrets {
        for sig in &signatures {
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
                continue;
            };
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(body);
            if mac.verify_slice(sig).is_ok() {
                return Ok(());
            }
        }
    }
    Err(SignatureError::NoMatch)
}

/// The header Stripe would send for `body` at `t` under `secret` (for fakes and tests).
pub fn sign(body: &[u8], secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    const NOW: i64 = 1_767_225_600;

    /// A vector computed outside this code: `printf '%s' '1767225600.{"id":"evt_1","type":"payment_intent.succeeded"}' | openssl dgst -sha256 -hmac whsec_test_secret`.
    const OPENSSL_V1: &str = "0739de02968cd6964663b290409abfa00a8c327e21a27dc8b631b96d278d877d";

    /// Name, header, secrets, now, what verification answers.
    type Case = (
        &'static str,
        String,
        &'static [&'static str],
        i64,
        Result<(), SignatureError>,
    );

    #[test]
    fn deliveries_are_verified_as_stripe_documents() {
        let good = sign(BODY, SECRET, NOW);
        let old = sign(BODY, "whsec_old", NOW);
        let v1 = good.split_once(",v1=").unwrap().1.to_owned();
        let cases: Vec<Case> = vec![
            (
                "a signature under the secret verifies",
                good.clone(),
                &[SECRET],
                NOW,
                Ok(()),
            ),
            (
                "one of several v1 signatures is enough (a secret rolling)",
                format!("t={NOW},v1={},v1={v1}", "00".repeat(32)),
                &[SECRET],
                NOW,
                Ok(()),
            ),
            (
                "the previous secret verifies while both are configured",
                old.clone(),
                &[SECRET, "whsec_old"],
                NOW,
                Ok(()),
            ),
            (
                "another secret does not verify",
                old,
                &[SECRET],
                NOW,
                Err(SignatureError::NoMatch),
            ),
            (
                "a v0 scheme alone is not a signature",
                format!("t={NOW},v0={v1}"),
                &[SECRET],
                NOW,
                Err(SignatureError::Malformed),
            ),
            (
                "300 s late is inside the tolerance",
                good.clone(),
                &[SECRET],
                NOW + 300,
                Ok(()),
            ),
            (
                "301 s late is a replay",
                good.clone(),
                &[SECRET],
                NOW + 301,
                Err(SignatureError::OutsideTolerance),
            ),
            (
                "a timestamp from the future past the tolerance is refused",
                good.clone(),
                &[SECRET],
                NOW - 301,
                Err(SignatureError::OutsideTolerance),
            ),
            (
                "a timestamp that overflows is refused, not a panic",
                format!("t={},v1={v1}", i64::MIN),
                &[SECRET],
                i64::MAX,
                Err(SignatureError::OutsideTolerance),
            ),
            (
                "a timestamp that is not a number is malformed",
                format!("t=soon,v1={v1}"),
                &[SECRET],
                NOW,
                Err(SignatureError::Malformed),
            ),
            (
                "an empty header is malformed",
                String::new(),
                &[SECRET],
                NOW,
                Err(SignatureError::Malformed),
            ),
            (
                "multi-byte text is malformed, not a panic",
                "t=１７,v1=é".into(),
                &[SECRET],
                NOW,
                Err(SignatureError::Malformed),
            ),
        ];
        for (name, header, secrets, now, expected) in cases {
            assert_eq!(verify(&header, BODY, secrets, now), expected, "{name}");
        }
        let mut tampered = BODY.to_vec();
        tampered[2] = b'X';
        assert_eq!(
            verify(&good, &tampered, &[SECRET], NOW),
            Err(SignatureError::NoMatch),
            "a changed body does not verify"
        );
    }

    #[test]
    fn the_signature_matches_openssl() {
        let header = sign(BODY, SECRET, NOW);
        assert_eq!(header, format!("t={NOW},v1={OPENSSL_V1}"));
    }
}
