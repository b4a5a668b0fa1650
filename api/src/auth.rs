//! Bearer-token auth. Tokens are looked up by their sha256; a revoked or unknown token is 401,
//! a token without the route's capability 403.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use ocart_domain::token::{Capability, TOKEN_TYPE};

use crate::core::token_hash;
use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub capabilities: Vec<Capability>,
}

impl Caller {
    /// The actor recorded in event metadata.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    /// Whether this token may read shoppers' emails, phones and names in clear
    /// (`ocart_view_personal_data`, or `ocart_manage`, which implies it).
    pub fn sees_personal_data(&self) -> bool {
        Capability::sees_personal_data(&self.capabilities)
    }

    /// Masks `row`'s personal data unless this token may see it.
    pub fn redact_cart(&self, row: &mut ocart_projections::queries::CartRow) {
        use ocart_domain::masking::{mask, PersonalKind};
        if self.sees_personal_data() {
            return;
        }
        for (kind, value) in [
            (PersonalKind::Email, &mut row.email),
            (PersonalKind::Phone, &mut row.phone),
            (PersonalKind::Name, &mut row.name),
        ] {
            if let Some(v) = value.as_mut() {
                *v = mask(kind, v);
            }
        }
    }

    /// Passes if the token holds any of `caps`.
    pub fn require(&self, caps: &[Capability]) -> Result<(), ApiError> {
        if caps.iter().any(|c| self.capabilities.contains(c)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(caps[0].as_str()))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let secret = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 200)
            .ok_or(ApiError::Unauthorized)?;
        let core = &state.core;
        let hash = token_hash(secret);
        // What this process wrote about tokens so far: a token revoked here a moment ago must
        // already fail, so a remembered answer from before that write is not used.
        let written = core.log.head_of(TOKEN_TYPE);
        if let Some(caller) = core.token_cache.get(&hash, written) {
            return Ok(caller);
        }
        // The token table holds every token event this process has written.
        core.read_own_writes("api_tokens", TOKEN_TYPE, &core.tokens_applied)
            .await;
        let row = ocart_projections::queries::token_by_hash(&core.db, &hash)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if row.revoked_at.is_some() {
            return Err(ApiError::Unauthorized);
        }
        let caller = Caller {
            token_id: row.token_id,
            capabilities: row.capabilities.0,
        };
        core.token_cache.put(hash, written, caller.clone());
        Ok(caller)
    }
}

/// Live tokens looked up in the last [`TokenCache::TTL`], so a client making many calls
/// costs one token read a second instead of one a call (ADR 0019). An answer is used only
/// while this process has written no token event since it was read (a revocation here takes
/// effect at once); a revocation by another process takes effect within the TTL, on top of
/// the `api_tokens` projection's own lag. Unknown and revoked tokens are never remembered, so
/// a new token works at once and guessed tokens cannot fill the memory.
#[derive(Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<HashMap<String, (Instant, i64, Caller)>>,
}

impl TokenCache {
    /// How long an answer is used.
    pub const TTL: Duration = Duration::from_secs(1);
    /// Tokens remembered at most (the memory starts over when full).
    const CAPACITY: usize = 10_000;

    fn get(&self, hash: &str, written: i64) -> Option<Caller> {
        let entries = self.entries.lock().expect("token cache");
        entries
            .get(hash)
            .filter(|(at, head, _)| *head == written && at.elapsed() < Self::TTL)
            .map(|(_, _, caller)| caller.clone())
    }

    fn put(&self, hash: String, written: i64, caller: Caller) {
        let mut entries = self.entries.lock().expect("token cache");
        if entries.len() >= Self::CAPACITY {
            entries.clear();
        }
        entries.insert(hash, (Instant::now(), written, caller));
    }
}
