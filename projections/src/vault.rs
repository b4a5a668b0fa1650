//! The key vault: subject hashes (HMAC-SHA256 of a normalised value under the server secret),
//! per-subject AES-256-GCM data keys, sealing and unsealing, and erasure (deleting the key).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use ocart_domain::{Email, Phone, Sealed, SubjectHash};
use rand::RngCore;
use sha2::Sha256;
use uuid::Uuid;

use crate::db::Db;
use crate::{exec_db, fetch_optional_db};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the key vault is unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("sealed data is corrupt")]
    Corrupt,
}

/// A data key and its id.
#[derive(Clone)]
struct DataKey {
    id: String,
    cipher: Aes256Gcm,
}

/// The key vault. Cheap to clone.
#[derive(Clone)]
pub struct Vault {
    db: Db,
    secret: Arc<[u8; 32]>,
    by_subject: Arc<RwLock<HashMap<String, DataKey>>>,
    by_id: Arc<RwLock<HashMap<String, DataKey>>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault { .. }")
    }
}

impl Vault {
    /// Opens the vault with the configured server secret, or the one stored in the database
    /// (generated on first use).
    pub async fn open(db: Db, configured_secret: Option<&[u8]>) -> Result<Self, VaultError> {
        let secret = match configured_secret {
            Some(bytes) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"ocart-server-secret")
                    .expect("hmac key");
                mac.update(bytes);
                mac.finalize().into_bytes().into()
            }
            None => stored_secret(&db).await?,
        };
        Ok(Self {
            db,
            secret: Arc::new(secret),
            by_subject: Arc::default(),
            by_id: Arc::default(),
        })
    }

    fn hmac(&self, domain: &str, value: &str) -> SubjectHash {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&*self.secret).expect("hmac key");
        mac.update(domain.as_bytes());
        mac.update(b":");
        mac.update(value.as_bytes());
        SubjectHash::from_hex(hex::encode(mac.finalize().into_bytes()))
    }

    pub fn subject_for_email(&self, email: &Email) -> SubjectHash {
        self.hmac("email", email.as_str())
    }

    pub fn subject_for_phone(&self, phone: &Phone) -> SubjectHash {
        self.hmac("phone", phone.as_str())
    }

    /// The token of a link (`purpose` restore or unsubscribe) in the message `message_key`:
    /// unguessable without the server secret, and the same if the message is built again
    /// after a crash. URL-safe base64 of 32 bytes; only its sha256 is ever stored.
    pub fn link_token(&self, purpose: &str, message_key: &str) -> String {
        use base64::Engine;
        let mac = self.hmac(&format!("link:{purpose}"), message_key);
        let bytes = hex::decode(mac.as_str()).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A signing key for `purpose` (e.g. `upsell-token`), derived from the server secret:
    /// HMAC-SHA256(secret, "key:" purpose). The same on every instance sharing the secret;
    /// never printed, never stored.
    pub fn derived_key(&self, purpose: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&*self.secret).expect("hmac key");
        mac.update(b"key:");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A keyed hash of a free-text value (a name), to detect changes without keeping it.
    pub fn fingerprint(&self, value: &str) -> String {
        self.hmac("text", &value.trim().to_lowercase())
            .as_str()
            .to_owned()
    }

    /// Seals `plaintext` under the subject's data key, creating the key on first use.
    pub async fn seal(&self, subject: &SubjectHash, plaintext: &str) -> Result<Sealed, VaultError> {
        let key = self.key_for(subject).await?;
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .map_err(|_| VaultError::Corrupt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        Ok(Sealed {
            key: key.id,
            ct: B64.encode(out),
        })
    }

    /// The clear text, or `None` if the key was erased.
    pub async fn unseal(&self, sealed: &Sealed) -> Result<Option<String>, VaultError> {
        let cached = self
            .by_id
            .read()
            .expect("vault lock")
            .get(&sealed.key)
            .cloned();
        let key = match cached {
            Some(key) => key,
            None => {
                let row: Option<(Vec<u8>,)> = fetch_optional_db!(
                    &self.db,
                    (Vec<u8>,),
                    "SELECT data_key FROM key_vault WHERE key_id = $1",
                    &sealed.key
                )?;
                let Some((bytes,)) = row else { return Ok(None) };
                let key = DataKey {
                    id: sealed.key.clone(),
                    cipher: Aes256Gcm::new_from_slice(&bytes).map_err(|_| VaultError::Corrupt)?,
                };
                self.by_id
                    .write()
                    .expect("vault lock")
                    .insert(key.id.clone(), key.clone());
                key
            }
        };
        let raw = B64.decode(&sealed.ct).map_err(|_| VaultError::Corrupt)?;
        if raw.len() < 12 {
            return Err(VaultError::Corrupt);
        }
        let (nonce, ct) = raw.split_at(12);
        let clear = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| VaultError::Corrupt)?;
        String::from_utf8(clear)
            .map(Some)
            .map_err(|_| VaultError::Corrupt)
    }

    /// Deletes the subject's data key: everything sealed with it becomes unreadable.
    pub async fn erase(&self, subject: &SubjectHash) -> Result<(), VaultError> {
        let removed = self
            .by_subject
            .write()
            .expect("vault lock")
            .remove(subject.as_str());
        if let Some(key) = removed {
            self.by_id.write().expect("vault lock").remove(&key.id);
        }
        let row: Option<(String,)> = fetch_optional_db!(
            &self.db,
            (String,),
            "SELECT key_id FROM key_vault WHERE subject = $1",
            subject.as_str()
        )?;
        if let Some((key_id,)) = row {
            self.by_id.write().expect("vault lock").remove(&key_id);
        }
        exec_db!(
            &self.db,
            "DELETE FROM key_vault WHERE subject = $1",
            subject.as_str()
        )?;
        Ok(())
    }

    /// Deletes the subject's data key if it was created no later than `at`, the time an
    /// erasure was recorded: a key the subject got afterwards (a new capture, with new consent)
    /// seals data that erasure did not cover. Answers whether a key was deleted. This is how
    /// the eraser completes an erasure after a crash without touching what came later.
    pub async fn erase_if_created_by(
        &self,
        subject: &SubjectHash,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, VaultError> {
        let row: Option<(String, chrono::DateTime<chrono::Utc>)> = fetch_optional_db!(
            &self.db,
            (String, chrono::DateTime<chrono::Utc>),
            "SELECT key_id, created_at FROM key_vault WHERE subject = $1",
            subject.as_str()
        )?;
        let Some((key_id, created_at)) = row else {
            return Ok(false);
        };
        if created_at > at {
            return Ok(false);
        }
        {
            let mut by_subject = self.by_subject.write().expect("vault lock");
            if by_subject
                .get(subject.as_str())
                .is_some_and(|k| k.id == key_id)
            {
                by_subject.remove(subject.as_str());
            }
        }
        self.by_id.write().expect("vault lock").remove(&key_id);
        exec_db!(
            &self.db,
            "DELETE FROM key_vault WHERE subject = $1 AND key_id = $2",
            subject.as_str(),
            &key_id
        )?;
        Ok(true)
    }

    /// Forgets cached keys of a subject erased by another process.
    pub fn forget(&self, subject: &SubjectHash) {
        if let Some(key) = self
            .by_subject
            .write()
            .expect("vault lock")
            .remove(subject.as_str())
        {
            self.by_id.write().expect("vault lock").remove(&key.id);
        }
    }

    async fn key_for(&self, subject: &SubjectHash) -> Result<DataKey, VaultError> {
        if let Some(key) = self
            .by_subject
            .read()
            .expect("vault lock")
            .get(subject.as_str())
        {
            return Ok(key.clone());
        }
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let key_id = Uuid::now_v7().to_string();
        exec_db!(
            &self.db,
            "INSERT INTO key_vault (subject, key_id, data_key) VALUES ($1, $2, $3) ON CONFLICT (subject) DO NOTHING",
            subject.as_str(),
            &key_id,
            bytes.to_vec()
        )?;
        let (key_id, bytes): (String, Vec<u8>) = fetch_optional_db!(
            &self.db,
            (String, Vec<u8>),
            "SELECT key_id, data_key FROM key_vault WHERE subject = $1",
            subject.as_str()
        )?
        .ok_or(VaultError::Corrupt)?;
        let key = DataKey {
            id: key_id,
            cipher: Aes256Gcm::new_from_slice(&bytes).map_err(|_| VaultError::Corrupt)?,
        };
        self.by_subject
            .write()
            .expect("vault lock")
            .insert(subject.as_str().to_owned(), key.clone());
        self.by_id
            .write()
            .expect("vault lock")
            .insert(key.id.clone(), key.clone());
        Ok(key)
    }
}

async fn stored_secret(db: &Db) -> Result<[u8; 32], VaultError> {
    let mut fresh = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut fresh);
    exec_db!(db, "INSERT INTO server_secrets (name, value) VALUES ('subject_hmac', $1) ON CONFLICT (name) DO NOTHING", fresh.to_vec())?;
    let (value,): (Vec<u8>,) = fetch_optional_db!(
        db,
        (Vec<u8>,),
        "SELECT value FROM server_secrets WHERE name = 'subject_hmac'"
    )?
    .ok_or(VaultError::Corrupt)?;
    value.try_into().map_err(|_| VaultError::Corrupt)
}
