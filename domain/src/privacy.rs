use serde::{Deserialize, Serialize};

/// HMAC-SHA256 (hex) of a normalised email or phone under the server secret. It names a data
/// subject without revealing it, and is stable, so it can be compared, indexed and suppressed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubjectHash(String);

impl SubjectHash {
    /// Wraps an already computed hex HMAC. The edge computes it; the domain only compares it.
    pub fn from_hex(hex: impl Into<String>) -> Self {
        Self(hex.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SubjectHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A value sealed with AES-256-GCM under one data key of one subject. `key` names the key in
/// the vault; `ct` is base64 of nonce ‖ ciphertext ‖ tag. Once the key is deleted the value is
/// unreadable: that is erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub key: String,
    pub ct: String,
}

/// A personal field as the log holds it: who it belongs to, and the sealed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalField {
    pub subject: SubjectHash,
    pub sealed: Sealed,
}
