//! The secrets the verifiers accept, per purpose, with their versions (ADR 0016): version 0 is
//! the config file's (`[woocommerce] webhook_secret`, `[gateways.stripe] webhook_secrets`) or,
//! for upsell tokens, the key derived from the server secret; versions 1, 2, … are the ones
//! `ocart gateway rotate` stored sealed in `gateway_secrets`. A version is accepted until its
//! `retire_at`, by the server's clock.
//!
//! Every instance holds the table in memory and reads it again every second in the background
//! (single flight), and at once — at most every 250 ms — when a signature matched none of the
//! secrets it holds, so a rotation is seen without a restart. A new upsell key signs tokens
//! only once this instance has known it for three seconds, so every other instance knows it
//! too when a shopper comes back with such a token.
//!
//! No secret is ever logged, printed or shown by `Debug`: the states expose counts, versions
//! and retirement times only.

use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use chrono::{DateTime, Utc};
use ocart_domain::gateway_secret::SecretPurpose;
use ocart_projections::{fetch_all_db, Db, Vault};
use rand::RngCore;
use serde::Serialize;
use utoipa::ToSchema;

use crate::core::Core;
use crate::upsell_token::{self, TokenError};

/// How often the table is read again in the background.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// After a signature matched nothing, the table is read again if what is held is older.
pub const MISS_REFRESH_AFTER: Duration = Duration::from_millis(250);
/// How long this instance knows a new upsell key before it signs tokens with it.
pub const ISSUE_AFTER: Duration = Duration::from_secs(3);

/// What the sealing key is derived for (`Vault::derived_key`).
const SEAL_KEY_PURPOSE: &str = "gateway-secrets";

/// A secret's bytes: never shown by `Debug`, overwritten when dropped.
#[derive(Clone)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBytes(..)")
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}

fn cipher(vault: &Vault) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(&vault.derived_key(SEAL_KEY_PURPOSE)).expect("a 32-byte key")
}

fn aad(purpose: SecretPurpose, version: u32) -> String {
    format!("{}:{version}", purpose.as_str())
}

/// `nonce || AES-256-GCM(secret)` under the key derived from the server secret, bound to
/// (purpose, version).
pub fn seal(vault: &Vault, purpose: SecretPurpose, version: u32, secret: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let aad = aad(purpose, version);
    let ct = cipher(vault)
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: aad.as_bytes(),
            },
        )
        .expect("AES-GCM seals any message of this size");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

/// The secret sealed by [`seal`], or `None` (another server secret, another row's value).
pub fn unseal(
    vault: &Vault,
    purpose: SecretPurpose,
    version: u32,
    sealed: &[u8],
) -> Option<SecretBytes> {
    if sealed.len() < 12 {
        return None;
    }
    let (nonce, ct) = sealed.split_at(12);
    let aad = aad(purpose, version);
    cipher(vault)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: aad.as_bytes(),
            },
        )
        .ok()
        .map(SecretBytes)
}

#[derive(Debug)]
struct Entry {
    purpose: SecretPurpose,
    version: u32,
    /// `None` on version 0's row: the config file's secret, which is never stored.
    secret: Option<SecretBytes>,
    retire_at: Option<DateTime<Utc>>,
    /// When this instance first saw it.
    seen_at: Instant,
}

impl Entry {
    fn live(&self, now: DateTime<Utc>) -> bool {
        self.retire_at.is_none_or(|at| now < at)
    }
}

/// The table as last read.
#[derive(Debug, Default)]
pub struct Ring {
    entries: Vec<Entry>,
    unreadable: Vec<(SecretPurpose, u32)>,
}

/// One purpose's state as `ocart gateway status` and `GET /gateways` show it: never a secret.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretState {
    /// woocommerce-webhook, stripe-webhook or upsell-token.
    pub purpose: &'static str,
    /// How many secrets are accepted now (the config file's count as version 0).
    pub live: usize,
    /// The newest version (0: never rotated).
    pub version: u32,
    /// The accepted versions that retire, and when.
    pub retiring: Vec<Retiring>,
    /// Stored versions this server cannot open (sealed under another server secret).
    pub unreadable: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Retiring {
    pub version: u32,
    pub retire_at: DateTime<Utc>,
}

impl Ring {
    /// Whether version 0 (the config file's secret, the derived key) is still accepted.
    fn initial_live(&self, purpose: SecretPurpose, now: DateTime<Utc>) -> bool {
        self.entries
            .iter()
            .find(|e| e.purpose == purpose && e.version == 0)
            .is_none_or(|e| e.live(now))
    }

    fn stored_live(
        &self,
        purpose: SecretPurpose,
        now: DateTime<Utc>,
    ) -> impl Iterator<Item = (&Entry, &SecretBytes)> {
        self.entries
            .iter()
            .filter(move |e| e.purpose == purpose && e.live(now))
            .filter_map(|e| e.secret.as_ref().map(|s| (e, s)))
    }

    /// The webhook secrets of `purpose` accepted at `now`, newest first.
    fn webhook_secrets<'a>(
        &'a self,
        core: &'a Core,
        purpose: SecretPurpose,
        now: DateTime<Utc>,
    ) -> Vec<&'a str> {
        let mut out: Vec<(u32, &str)> = self
            .stored_live(purpose, now)
            .filter_map(|(e, s)| std::str::from_utf8(s.expose()).ok().map(|s| (e.version, s)))
            .collect();
        out.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        let mut out: Vec<&str> = out.into_iter().map(|(_, s)| s).collect();
        if self.initial_live(purpose, now) {
            out.extend(config_secrets(core, purpose));
        }
        out
    }

    /// The key and version new upsell tokens are signed with.
    fn upsell_signer(&self, core: &Core, now: DateTime<Utc>) -> (Option<u32>, SecretBytes) {
        let live: Vec<(&Entry, &SecretBytes)> =
            self.stored_live(SecretPurpose::UpsellToken, now).collect();
        let known = live
            .iter()
            .filter(|(e, _)| e.seen_at.elapsed() >= ISSUE_AFTER)
            .max_by_key(|(e, _)| e.version);
        let chosen = match known {
            Some(found) => Some(found),
            // Nothing known long enough: version 0 while it lasts, else the newest.
            None if self.initial_live(SecretPurpose::UpsellToken, now) => None,
            None => live.iter().max_by_key(|(e, _)| e.version),
        };
        match chosen {
            Some((e, s)) => (Some(e.version), (*s).clone()),
            None => (None, initial_upsell_key(core)),
        }
    }

    /// The key of version `kid` of the upsell key, if it is accepted at `now`.
    fn upsell_key(&self, core: &Core, kid: Option<u32>, now: DateTime<Utc>) -> Option<SecretBytes> {
        match kid {
            None => self
                .initial_live(SecretPurpose::UpsellToken, now)
                .then(|| initial_upsell_key(core)),
            Some(v) => self
                .stored_live(SecretPurpose::UpsellToken, now)
                .find(|(e, _)| e.version == v)
                .map(|(_, s)| s.clone()),
        }
    }

    fn state(&self, core: &Core, purpose: SecretPurpose, now: DateTime<Utc>) -> SecretState {
        let stored: Vec<&Entry> = self
            .entries
            .iter()
            .filter(|e| e.purpose == purpose)
            .collect();
        let initial_count = if self.initial_live(purpose, now) {
            match purpose {
                SecretPurpose::UpsellToken => 1,
                _ => config_secrets(core, purpose).len(),
            }
        } else {
            0
        };
        let mut retiring: Vec<Retiring> = stored
            .iter()
            .filter(|e| e.live(now))
            .filter(|e| e.version == 0 || e.secret.is_some())
            .filter_map(|e| {
                e.retire_at.map(|retire_at| Retiring {
                    version: e.version,
                    retire_at,
                })
            })
            .filter(|r| r.version > 0 || initial_count > 0)
            .collect();
        retiring.sort_by_key(|r| r.version);
        SecretState {
            purpose: purpose.as_str(),
            live: initial_count + self.stored_live(purpose, now).count(),
            version: stored.iter().map(|e| e.version).max().unwrap_or(0),
            retiring,
            unreadable: self
                .unreadable
                .iter()
                .filter(|(p, _)| *p == purpose)
                .count(),
        }
    }
}

/// Version 0 of a webhook purpose: what the config file says.
fn config_secrets(core: &Core, purpose: SecretPurpose) -> Vec<&str> {
    use secrecy::ExposeSecret;
    match purpose {
        SecretPurpose::WoocommerceWebhook => core
            .config
            .woocommerce
            .webhook_secret
            .iter()
            .map(|s| s.expose_secret())
            .collect(),
        SecretPurpose::StripeWebhook => core
            .config
            .gateways
            .stripe
            .iter()
            .flat_map(|s| s.webhook_secrets.iter().map(|s| s.expose_secret()))
            .collect(),
        SecretPurpose::UpsellToken => Vec::new(),
    }
}

/// Version 0 of the upsell key: derived from the server secret, never stored.
fn initial_upsell_key(core: &Core) -> SecretBytes {
    SecretBytes(crate::usecases::upsells::signing_key(core).to_vec())
}

struct Inner {
    db: Db,
    vault: Vault,
    current: RwLock<(Instant, Arc<Ring>)>,
    refresh: tokio::sync::Mutex<()>,
}

/// The cached ring (see the module). Cheap to share through `Core`.
pub struct SecretRing {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SecretRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretRing { .. }")
    }
}

type Row = (
    String,
    i32,
    Option<Vec<u8>>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

impl Inner {
    fn current(&self) -> (Instant, Arc<Ring>) {
        let held = self.current.read().unwrap_or_else(|e| e.into_inner());
        (held.0, held.1.clone())
    }

    /// Reads the table again (the caller holds `refresh`).
    async fn reload(&self) -> Result<(), sqlx::Error> {
        let rows: Vec<Row> = fetch_all_db!(
            &self.db,
            Row,
            "SELECT purpose, version, sealed, created_at, retire_at FROM gateway_secrets"
        )?;
        let (_, previous) = self.current();
        let mut ring = Ring::default();
        for (purpose, version, sealed, _created_at, retire_at) in rows {
            let Ok(purpose) = SecretPurpose::parse("purpose", &purpose) else {
                continue;
            };
            let Ok(version) = u32::try_from(version) else {
                continue;
            };
            let secret = match sealed {
                None => None,
                Some(sealed) => match unseal(&self.vault, purpose, version, &sealed) {
                    Some(secret) => Some(secret),
                    None => {
                        ring.unreadable.push((purpose, version));
                        continue;
                    }
                },
            };
            let seen_at = previous
                .entries
                .iter()
                .find(|e| e.purpose == purpose && e.version == version)
                .map_or_else(Instant::now, |e| e.seen_at);
            ring.entries.push(Entry {
                purpose,
                version,
                secret,
                retire_at,
                seen_at,
            });
        }
        if !ring.unreadable.is_empty() && previous.unreadable != ring.unreadable {
            tracing::warn!(
                versions = ?ring.unreadable,
                "gateway secrets that this server cannot open (sealed under another server secret?)"
            );
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (Instant::now(), Arc::new(ring));
        Ok(())
    }
}

async fn refresh_loop(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(REFRESH_EVERY).await;
        let Some(inner) = inner.upgrade() else { return };
        let _single = inner.refresh.lock().await;
        if let Err(e) = inner.reload().await {
            tracing::warn!(error = %e, "the gateway secrets could not be read again; keeping the ones held");
        }
    }
}

impl SecretRing {
    /// Reads the table and starts reading it again every [`REFRESH_EVERY`] while the ring
    /// lives.
    pub async fn open(db: Db, vault: Vault) -> Result<Self, sqlx::Error> {
        let inner = Arc::new(Inner {
            db,
            vault,
            current: RwLock::new((Instant::now(), Arc::new(Ring::default()))),
            refresh: tokio::sync::Mutex::new(()),
        });
        inner.reload().await?;
        tokio::spawn(refresh_loop(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// The ring as held.
    pub fn current(&self) -> Arc<Ring> {
        self.inner.current().1
    }

    /// After a miss against `seen`: a newer ring, read now, or once what is held is
    /// [`MISS_REFRESH_AFTER`] old (single flight: concurrent misses wait for one read, so the
    /// table is read at most every 250 ms however many bad signatures come in).
    async fn after_miss(&self, seen: &Arc<Ring>) -> Option<Arc<Ring>> {
        let _single = self.inner.refresh.lock().await;
        let (at, held) = self.inner.current();
        if !Arc::ptr_eq(&held, seen) {
            return Some(held);
        }
        // Read a moment ago, perhaps just before the rotation committed: read again once that
        // moment has passed (concurrent misses wait here and take this read).
        if let Some(wait) = MISS_REFRESH_AFTER.checked_sub(at.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        if let Err(e) = self.inner.reload().await {
            tracing::warn!(error = %e, "the gateway secrets could not be read again");
            return None;
        }
        Some(self.current())
    }

    /// Reads the table again now (after this process rotated a secret).
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let _single = self.inner.refresh.lock().await;
        self.inner.reload().await
    }

    /// Runs `check` over the webhook secrets of `purpose` accepted now (newest first, the config
    /// file's last); when it fails, once more over the table read again (see the module).
    /// `None`: no secret is set up for `purpose` at all.
    pub async fn check_webhook<T, E>(
        &self,
        core: &Core,
        purpose: SecretPurpose,
        check: impl Fn(&[&str]) -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        let now = core.clock.now();
        let ring = self.current();
        let first = {
            let secrets = ring.webhook_secrets(core, purpose, now);
            (!secrets.is_empty()).then(|| check(&secrets))
        };
        if matches!(first, Some(Ok(_))) {
            return first;
        }
        let Some(fresh) = self.after_miss(&ring).await else {
            return first;
        };
        let secrets = fresh.webhook_secrets(core, purpose, now);
        if secrets.is_empty() {
            return first;
        }
        Some(check(&secrets))
    }

    /// What each purpose has now: counts, versions, retirement times; never a secret.
    pub fn states(&self, core: &Core) -> Vec<SecretState> {
        let now = core.clock.now();
        let ring = self.current();
        SecretPurpose::ALL
            .into_iter()
            .map(|p| ring.state(core, p, now))
            .collect()
    }
}

/// A one-click token for `claims`, signed with the newest upsell key this instance has known
/// long enough (see the module).
pub fn issue_upsell_token(core: &Core, claims: &upsell_token::UpsellClaims) -> String {
    let (kid, key) = core
        .secret_ring
        .current()
        .upsell_signer(core, core.clock.now());
    upsell_token::issue_with_kid(claims, kid, key.expose())
}

/// The key `token` must verify under: its version's, if that version is accepted now; a
/// retired or unknown version is a bad signature. (The background read every second keeps
/// this in step with the table; tokens are signed only with keys known for longer.)
pub fn upsell_verify_key(core: &Core, token: &str) -> Result<SecretBytes, TokenError> {
    let kid = upsell_token::key_id(token)?;
    core.secret_ring
        .current()
        .upsell_key(core, kid, core.clock.now())
        .ok_or(TokenError::BadSignature)
}

/// A fresh random secret: 32 bytes, URL-safe base64 without padding.
pub fn generate() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let s = SecretBytes::new(b"whsec_do_not_show".to_vec());
        assert_eq!(format!("{s:?}"), "SecretBytes(..)");
        let e = Entry {
            purpose: SecretPurpose::StripeWebhook,
            version: 1,
            secret: Some(s),
            retire_at: None,
            seen_at: Instant::now(),
        };
        assert!(!format!("{e:?}").contains("do_not_show"));
    }

    #[test]
    fn generated_secrets_are_32_random_bytes() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
    }
}
