//! DKIM: the signing key (`[email.dkim]`), the headers a signature covers, and the DNS TXT
//! record that publishes the public key (ADR 0011). One home: the email builder signs with
//! [`DkimKey::lettre_config`], `ocart email dkim-record` prints [`DkimKey::record`], and the
//! DNS check's hint is built with [`record_value`].
//!
//! Keys accepted:
//! - `rsa`: PEM, PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`) or PKCS#8 (`-----BEGIN PRIVATE
//!   KEY-----`, what `openssl genpkey -algorithm RSA` writes); at least 1024 bits (RFC 8301).
//! - `ed25519`: PKCS#8 PEM (`openssl genpkey -algorithm ed25519`), or the base64 of the
//!   32-byte private key (the seed).

use base64::Engine as _;
use lettre::message::dkim::{
    DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
    DkimSigningKey,
};
use lettre::message::header::HeaderName;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use serde::{Deserialize, Serialize};

use super::channels::DkimSettings;

/// The signing algorithm (`[email.dkim] algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DkimAlgorithm {
    /// `rsa-sha256` (RFC 6376).
    #[default]
    Rsa,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519,
}

impl DkimAlgorithm {
    /// The `k=` tag of the DNS record.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimAlgorithm::Rsa => "rsa",
            DkimAlgorithm::Ed25519 => "ed25519",
        }
    }
}

/// Headers signed once and listed once more in `h=` (over-signed, RFC 6376 §5.4.2): a copy of
/// the message with one more instance of any of them (a second Subject, an attacker's
/// Reply-To) no longer verifies. A receiver shows the first instance, a verifier checks the
/// last; over-signing closes that gap. Reply-To is over-signed too: with `email.reply_to` set
/// it is present, and a second one must break the signature as well.
pub const OVER_SIGNED: [&str; 6] = ["From", "To", "Subject", "Date", "Message-ID", "Reply-To"];

/// Headers signed once (a second instance makes the message malformed or is harmless).
pub const SIGNED_ONCE: [&str; 4] = [
    "Content-Type",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The header names of `h=`, in order: the over-signed ones twice.
///
/// lettre hashes each listed name's (only) instance and, for a name listed again, replaces
/// the entry it already made instead of hashing it twice, while `h=` repeats the name: that
/// is over-signing exactly as RFC 6376 §5.4.2 describes (the second listing names an instance
/// that does not exist, which contributes nothing), as long as OCart's messages carry each of
/// these headers at most once, which the builder guarantees.
pub fn signed_header_names() -> Vec<&'static str> {
    OVER_SIGNED
        .iter()
        .chain(SIGNED_ONCE.iter())
        .chain(OVER_SIGNED.iter())
        .copied()
        .collect()
}

/// The DNS name of the key record: `<selector>._domainkey.<domain>`.
pub fn record_name(selector: &str, domain: &str) -> String {
    format!("{selector}._domainkey.{domain}")
}

/// The TXT value publishing `public_key` (base64): `v=DKIM1; k=<algorithm>; p=<key>`.
pub fn record_value(algorithm: DkimAlgorithm, public_key: &str) -> String {
    format!("v=DKIM1; k={}; p={public_key}", algorithm.as_str())
}

/// The TXT record to publish for the configured key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkimRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: String,
}

enum KeyMaterial {
    Rsa(Box<RsaPrivateKey>),
    /// The 32-byte seed.
    Ed25519(SecretBox<[u8; 32]>),
}

/// A DKIM private key, read and checked. Its `Debug` shows the algorithm only.
pub struct DkimKey {
    material: KeyMaterial,
}

impl std::fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DkimKey({}, ***)", self.algorithm().as_str())
    }
}

/// The PKCS#8 (RFC 8410) header of an Ed25519 private key; the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

const ED25519_OID: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");

impl DkimKey {
    /// Reads the key `[email.dkim]` names (`private_key` or `private_key_file`). Every error
    /// names the setting and says what is accepted; none carries key material.
    pub fn load(settings: &DkimSettings) -> anyhow::Result<Self> {
        let (text, field) = match (&settings.private_key, &settings.private_key_file) {
            (Some(key), _) => (key.clone(), "email.dkim.private_key".to_owned()),
            (None, Some(path)) => {
                let field = format!("email.dkim.private_key_file ({})", path.display());
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{field}: cannot read the key file: {e}"))?;
                (SecretString::from(text), field)
            }
            (None, None) => anyhow::bail!(
                "email.dkim needs private_key (the key itself) or private_key_file (a file holding it)"
            ),
        };
        Self::parse(text.expose_secret().trim(), settings.algorithm)
            .map_err(|reason| anyhow::anyhow!("{field}: {reason}"))
    }

    fn parse(text: &str, algorithm: DkimAlgorithm) -> Result<Self, String> {
        let material = match algorithm {
            DkimAlgorithm::Rsa => {
                let key = if text.starts_with("-----BEGIN RSA PRIVATE KEY-----") {
                    RsaPrivateKey::from_pkcs1_pem(text)
                        .map_err(|e| format!("not a readable PKCS#1 RSA private key ({e})"))?
                } else if text.starts_with("-----BEGIN PRIVATE KEY-----") {
                    RsaPrivateKey::from_pkcs8_pem(text).map_err(|e| {
                        format!("not a readable PKCS#8 RSA private key ({e}); is email.dkim.algorithm right?")
                    })?
                } else {
                    return Err("an RSA key must be PEM: PKCS#1 (-----BEGIN RSA PRIVATE KEY-----) or PKCS#8 (-----BEGIN PRIVATE KEY-----)".into());
                };
                let bits = key.n().bits();
                if bits < 1024 {
                    return Err(format!(
                        "the RSA key has {bits} bits; verifiers refuse keys under 1024 bits (RFC 8301): use 2048"
                    ));
                }
                KeyMaterial::Rsa(Box::new(key))
            }
            DkimAlgorithm::Ed25519 => KeyMaterial::Ed25519(ed25519_seed(text)?),
        };
        Ok(Self { material })
    }

    pub fn algorithm(&self) -> DkimAlgorithm {
        match self.material {
            KeyMaterial::Rsa(_) => DkimAlgorithm::Rsa,
            KeyMaterial::Ed25519(_) => DkimAlgorithm::Ed25519,
        }
    }

    /// The public key as the `p=` tag carries it: the base64 of the SubjectPublicKeyInfo DER
    /// for RSA, of the raw 32-byte key for Ed25519 (RFC 8463).
    pub fn public_key_base64(&self) -> anyhow::Result<String> {
        let engine = base64::engine::general_purpose::STANDARD;
        match &self.material {
            KeyMaterial::Rsa(key) => {
                let der = rsa::RsaPublicKey::from(key.as_ref())
                    .to_public_key_der()
                    .map_err(|e| anyhow::anyhow!("encoding the DKIM public key: {e}"))?;
                Ok(engine.encode(der.as_bytes()))
            }
            KeyMaterial::Ed25519(seed) => Ok(engine.encode(ed25519_public(seed)?)),
        }
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn record(&self, selector: &str, domain: &str) -> anyhow::Result<DkimRecord> {
        Ok(DkimRecord {
            name: record_name(selector, domain),
            kind: "TXT",
            value: record_value(self.algorithm(), &self.public_key_base64()?),
        })
    }

    /// lettre's signing configuration: relaxed/relaxed, the headers of
    /// [`signed_header_names`].
    pub fn lettre_config(&self, selector: &str, domain: &str) -> anyhow::Result<DkimConfig> {
        let engine = base64::engine::general_purpose::STANDARD;
        // lettre reads RSA keys as PKCS#1 PEM and Ed25519 keys as the base64 seed.
        let key = match &self.material {
            KeyMaterial::Rsa(key) => {
                let pem = key
                    .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
                    .map_err(|e| anyhow::anyhow!("email.dkim.private_key: {e}"))?;
                DkimSigningKey::new(&pem, DkimSigningAlgorithm::Rsa)
            }
            KeyMaterial::Ed25519(seed) => {
                let encoded = secrecy::SecretString::from(engine.encode(seed.expose_secret()));
                DkimSigningKey::new(encoded.expose_secret(), DkimSigningAlgorithm::Ed25519)
            }
        }
        .map_err(|e| anyhow::anyhow!("email.dkim.private_key: the signer refused the key: {e}"))?;
        Ok(DkimConfig::new(
            selector.to_owned(),
            domain.to_owned(),
            key,
            signed_header_names()
                .into_iter()
                .map(HeaderName::new_from_ascii_str)
                .collect(),
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        ))
    }
}

/// The seed of an Ed25519 key given as PKCS#8 PEM or as the base64 of the 32 bytes.
fn ed25519_seed(text: &str) -> Result<SecretBox<[u8; 32]>, String> {
    let accepted = "an Ed25519 key must be PKCS#8 PEM (-----BEGIN PRIVATE KEY-----, as openssl genpkey -algorithm ed25519 writes) or the base64 of its 32-byte private key";
    let mut seed = Box::new([0u8; 32]);
    if text.starts_with("-----BEGIN") {
        let (label, doc) = rsa::pkcs8::SecretDocument::from_pem(text)
            .map_err(|e| format!("not readable PEM ({e}); {accepted}"))?;
        if label != "PRIVATE KEY" {
            return Err(format!("a {label} PEM block; {accepted}"));
        }
        let info = rsa::pkcs8::PrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("not a PKCS#8 private key ({e}); {accepted}"))?;
        if info.algorithm.oid != ED25519_OID {
            return Err(format!(
                "a PKCS#8 key of another algorithm ({}); {accepted}; is email.dkim.algorithm right?",
                info.algorithm.oid
            ));
        }
        // CurvePrivateKey ::= OCTET STRING (RFC 8410 §7).
        match info.private_key {
            [0x04, 0x20, rest @ ..] if rest.len() == 32 => seed.copy_from_slice(rest),
            _ => return Err(format!("the PKCS#8 key is not 32 bytes; {accepted}")),
        }
    } else {
        let bytes = secrecy::SecretSlice::from(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| format!("not base64; {accepted}"))?,
        );
        if bytes.expose_secret().len() != 32 {
            return Err(format!(
                "{} bytes, not 32; {accepted}",
                bytes.expose_secret().len()
            ));
        }
        seed.copy_from_slice(bytes.expose_secret());
    }
    Ok(SecretBox::new(seed))
}

/// The Ed25519 public key of `seed`, with ring (the implementation rustls already builds,
/// reached through async-nats's re-export: no second Ed25519 crate).
fn ed25519_public(seed: &SecretBox<[u8; 32]>) -> anyhow::Result<[u8; 32]> {
    use async_nats::rustls::crypto::ring::sign::any_eddsa_type;
    use async_nats::rustls::pki_types::PrivatePkcs8KeyDer;
    let mut der = Vec::with_capacity(48);
    der.extend_from_slice(&ED25519_PKCS8_PREFIX);
    der.extend_from_slice(seed.expose_secret());
    let key = any_eddsa_type(&PrivatePkcs8KeyDer::from(der))
        .map_err(|e| anyhow::anyhow!("email.dkim.private_key: not an Ed25519 key: {e}"))?;
    let spki = key
        .public_key()
        .ok_or_else(|| anyhow::anyhow!("the Ed25519 public key is not available"))?;
    let spki: &[u8] = spki.as_ref();
    // SubjectPublicKeyInfo of Ed25519: a 12-byte header, then the 32-byte key (RFC 8410).
    spki.get(spki.len().saturating_sub(32)..)
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or_else(|| anyhow::anyhow!("the Ed25519 public key has an unexpected encoding"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032 §7.1, test 1.
    #[test]
    fn the_ed25519_public_key_follows_rfc_8032() {
        let seed = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap();
        let key = DkimKey::parse(
            &base64::engine::general_purpose::STANDARD.encode(&seed),
            DkimAlgorithm::Ed25519,
        )
        .unwrap();
        let public = base64::engine::general_purpose::STANDARD
            .decode(key.public_key_base64().unwrap())
            .unwrap();
        assert_eq!(
            hex::encode(public),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn over_signed_headers_are_listed_twice_and_the_others_once() {
        let names = signed_header_names();
        for name in OVER_SIGNED {
            assert_eq!(names.iter().filter(|n| **n == name).count(), 2, "{name}");
        }
        for name in SIGNED_ONCE {
            assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{name}");
        }
    }

    #[test]
    fn bad_keys_are_refused_with_what_is_accepted() {
        for (text, algorithm, says) in [
            ("not a key", DkimAlgorithm::Rsa, "must be PEM"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----",
                DkimAlgorithm::Rsa,
                "PKCS#1",
            ),
            ("c2hvcnQ=", DkimAlgorithm::Ed25519, "not 32"),
            ("!!", DkimAlgorithm::Ed25519, "not base64"),
        ] {
            let err = DkimKey::parse(text, algorithm).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
