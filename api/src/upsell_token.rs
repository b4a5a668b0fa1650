//! One-click upsell tokens (issue 11): an HMAC-SHA256-signed, short-lived token bound to
//! one paid parent order, one funnel and step, one offer and the return URL, with a unique `jti` that the accept
//! use case burns in the log on first use (a replay is refused there, not here).
//!
//! Form: `base64url(claims JSON) "." base64url(HMAC-SHA256(key, first part))`, no padding. The
//! key is the server's upsell signing secret (never printed; tokens are not stored, only their
//! `jti`). Verification checks the MAC in constant time before it reads the claims, then the
//! expiry; it never panics on any input.
//!
//! After `ocart gateway rotate upsell-token` (ADR 0016) tokens carry the signing key's version
//! in front: `"k" version "." payload "." signature`, the MAC taken over `"k" version "."
//! payload`, so the version is signed with the rest. A token without it is version 0's (the key
//! derived from the server secret), as every token issued before the first rotation is.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The longest token accepted (a token is about 250 characters).
pub const MAX_TOKEN_LEN: usize = 2048;

/// What a token grants: one acceptance of one offer at one step of one order's funnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsellClaims {
    /// The parent order (the store's order id).
    pub order_id: String,
    /// The funnel (its slug).
    #[serde(default)]
    pub funnel_id: String,
    /// The funnel step the offer is shown at.
    pub step: String,
    /// The offer.
    pub offer_id: String,
    /// Unique per token; burned on first use.
    pub jti: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Where the shopper goes after the funnel's last step (signed with the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_url: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the upsell token is malformed")]
    Malformed,
    #[error("the upsell token's signature does not verify")]
    BadSignature,
    #[error("the upsell token has expired")]
    Expired,
}

impl UpsellClaims {
    /// Claims for `order_id` at `step` of `funnel_id` for `offer_id`, valid for `ttl` from
    /// `now`, with a fresh random `jti` and no return URL.
    pub fn new(
        order_id: &str,
        funnel_id: &str,
        step: &str,
        offer_id: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Self {
        Self {
            order_id: order_id.to_owned(),
            funnel_id: funnel_id.to_owned(),
            step: step.to_owned(),
            offer_id: offer_id.to_owned(),
            jti: uuid::Uuid::new_v4().to_string(),
            exp: now.timestamp().saturating_add(ttl.num_seconds()),
            return_url: None,
        }
    }

    /// When the token expires.
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

fn mac(key: &[u8], payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac
}

/// The signed token for `claims` under `key`.
pub fn issue(claims: &UpsellClaims, key: &[u8]) -> String {
    let json = serde_json::to_vec(claims).expect("claims serialise");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let sig = URL_SAFE_NO_PAD.encode(mac(key, &payload).finalize().into_bytes());
    format!("{payload}.{sig}")
}

/// The signed token for `claims` under `key`, version `kid` of the signing key (`None`:
/// version 0, no prefix, as [`issue`]).
pub fn issue_with_kid(claims: &UpsellClaims, kid: Option<u32>, key: &[u8]) -> String {
    let Some(kid) = kid else {
        return issue(claims, key);
    };
    let json = serde_json::to_vec(claims).expect("claims serialise");
    let signed = format!("k{kid}.{}", URL_SAFE_NO_PAD.encode(json));
    let sig = URL_SAFE_NO_PAD.encode(mac(key, &signed).finalize().into_bytes());
    format!("{signed}.{sig}")
}

/// The version of the key `token` says it was signed with (`None`: version 0), read before
/// anything is verified only to choose the key; the signature covers it.
pub fn key_id(token: &str) -> Result<Option<u32>, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), None, None) => Ok(None),
        (Some(kid), Some(_), Some(_), None) => {
            let digits = kid.strip_prefix('k').ok_or(TokenError::Malformed)?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(TokenError::Malformed);
            }
            match digits.parse::<u32>() {
                Ok(0) | Err(_) => Err(TokenError::Malformed),
                Ok(n) => Ok(Some(n)),
            }
        }
        _ => Err(TokenError::Malformed),
    }
}

/// The claims of `token` if it was signed with `key` and has not expired at `now`.
pub fn verify(token: &str, key: &[u8], now: DateTime<Utc>) -> Result<UpsellClaims, TokenError> {
    let claims = verify_signature(token, key)?;
    if now.timestamp() >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// The claims of `token` if it was signed with `key`, expired or not: what reading the state
/// of a decision already made, or confirming its charge, needs (neither can decide anything
/// new; a confirm reads the outcome back from the gateway).
pub fn verify_signature(token: &str, key: &[u8]) -> Result<UpsellClaims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    key_id(token)?;
    let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let payload = signed
        .split_once('.')
        .map_or(signed, |(_, payload)| payload);
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| TokenError::Malformed)?;
    mac(key, signed)
        .verify_slice(&sig)
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"upsell-signing-secret-for-tests";

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600, 0).unwrap()
    }

    fn claims() -> UpsellClaims {
        UpsellClaims::new(
            "1042",
            "main",
            "upsell-1",
            "offer-7",
            now(),
            Duration::minutes(30),
        )
    }

    /// Name, token, key, now, what verification answers.
    type Case = (
        &'static str,
        String,
        &'static [u8],
        DateTime<Utc>,
        Result<(), TokenError>,
    );

    #[test]
    fn tokens_verify_only_as_issued_and_until_they_expire() {
        let c = claims();
        let token = issue(&c, KEY);
        let (payload, sig) = token.split_once('.').unwrap();
        let mut other = c.clone();
        other.order_id = "9999".into();
        let mut redirected = c.clone();
        redirected.return_url = Some("https://evil.test/".into());
        let redirected_payload = issue(&redirected, KEY)
            .split_once('.')
            .unwrap()
            .0
            .to_owned();
        let foreign_payload = issue(&other, KEY).split_once('.').unwrap().0.to_owned();
        let cases: Vec<Case> = vec![
            ("a fresh token verifies", token.clone(), KEY, now(), Ok(())),
            (
                "a second before expiry it verifies",
                token.clone(),
                KEY,
                now() + Duration::minutes(30) - Duration::seconds(1),
                Ok(()),
            ),
            (
                "at expiry it is refused",
                token.clone(),
                KEY,
                now() + Duration::minutes(30),
                Err(TokenError::Expired),
            ),
            (
                "another key's token is refused",
                token.clone(),
                b"another key",
                now(),
                Err(TokenError::BadSignature),
            ),
            (
                "claims swapped under the old signature are refused (another order)",
                format!("{foreign_payload}.{sig}"),
                KEY,
                now(),
                Err(TokenError::BadSignature),
            ),
            (
                "another return URL under the old signature is refused",
                format!("{redirected_payload}.{sig}"),
                KEY,
                now(),
                Err(TokenError::BadSignature),
            ),
            (
                "a truncated signature is refused",
                format!("{payload}.{}", &sig[..sig.len() - 3]),
                KEY,
                now(),
                Err(TokenError::BadSignature),
            ),
            (
                "no dot is malformed",
                payload.to_owned(),
                KEY,
                now(),
                Err(TokenError::Malformed),
            ),
            (
                "an empty token is malformed",
                String::new(),
                KEY,
                now(),
                Err(TokenError::Malformed),
            ),
            (
                "multi-byte text is malformed, not a panic",
                "é.ü".into(),
                KEY,
                now(),
                Err(TokenError::Malformed),
            ),
            (
                "a huge token is refused before any work",
                "a".repeat(MAX_TOKEN_LEN + 1),
                KEY,
                now(),
                Err(TokenError::Malformed),
            ),
        ];
        for (name, token, key, at, expected) in cases {
            assert_eq!(verify(&token, key, at).map(|_| ()), expected, "{name}");
        }
        assert_eq!(
            verify(&token, KEY, now()).unwrap(),
            c,
            "the claims read back"
        );
    }

    #[test]
    fn an_expired_token_still_shows_whose_it_is_but_never_a_forged_one() {
        let token = issue(&claims(), KEY);
        let later = now() + Duration::days(2);
        assert_eq!(verify(&token, KEY, later), Err(TokenError::Expired));
        assert_eq!(verify_signature(&token, KEY), Ok(claims_of(&token)));
        assert_eq!(
            verify_signature(&token, b"another key"),
            Err(TokenError::BadSignature)
        );
    }

    fn claims_of(token: &str) -> UpsellClaims {
        let json = URL_SAFE_NO_PAD
            .decode(token.split_once('.').unwrap().0)
            .unwrap();
        serde_json::from_slice(&json).unwrap()
    }

    #[test]
    fn a_versioned_token_verifies_only_under_its_key_and_its_version_is_signed() {
        let c = claims();
        let token = issue_with_kid(&c, Some(3), KEY);
        assert!(token.starts_with("k3."), "{token}");
        assert_eq!(key_id(&token), Ok(Some(3)));
        assert_eq!(verify(&token, KEY, now()), Ok(c.clone()));
        assert_eq!(
            verify(&token, b"another key", now()),
            Err(TokenError::BadSignature)
        );
        let relabelled = format!("k4{}", &token[2..]);
        assert_eq!(key_id(&relabelled), Ok(Some(4)));
        assert_eq!(
            verify(&relabelled, KEY, now()),
            Err(TokenError::BadSignature),
            "the version is under the signature"
        );
        let unversioned = token.split_once('.').unwrap().1;
        assert_eq!(key_id(unversioned), Ok(None));
        assert_eq!(
            verify(unversioned, KEY, now()),
            Err(TokenError::BadSignature),
            "dropping the version does not make it version 0's"
        );
        assert_eq!(issue_with_kid(&c, None, KEY).split('.').count(), 2);
        for bad in [
            "k0.a.b",
            "x1.a.b",
            "k.a.b",
            "k1a.a.b",
            "k99999999999.a.b",
            "a.b.c.d",
            "é.ü.ö",
        ] {
            assert_eq!(key_id(bad), Err(TokenError::Malformed), "{bad}");
            assert_eq!(verify(bad, KEY, now()), Err(TokenError::Malformed), "{bad}");
        }
        assert_eq!(key_id("k1.."), Ok(Some(1)));
        assert_eq!(
            verify("k1..", KEY, now()),
            Err(TokenError::BadSignature),
            "an empty signature matches nothing"
        );
    }

    #[test]
    fn every_token_has_its_own_jti() {
        assert_ne!(claims().jti, claims().jti);
    }

    #[test]
    fn a_signed_payload_that_is_not_claims_is_malformed() {
        let payload = URL_SAFE_NO_PAD.encode(b"{\"order_id\":1}");
        let sig = URL_SAFE_NO_PAD.encode(mac(KEY, &payload).finalize().into_bytes());
        assert_eq!(
            verify(&format!("{payload}.{sig}"), KEY, now()),
            Err(TokenError::Malformed)
        );
    }
}
