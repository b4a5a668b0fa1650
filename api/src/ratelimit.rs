//! Rate limits for the public endpoints, and the client IP rule: `X-Forwarded-For` is believed
//! only when the peer is a configured trusted proxy.
//!
//! Each public surface has its own budget, so one cannot starve another: checkout capture,
//! restore links and the open pixel are limited per client IP; unsubscribe links are limited
//! per link (token), never per IP, because mailbox providers send RFC 8058 one-click POSTs from
//! shared addresses and an unsubscribe must always be honoured (a token that is no link of ours
//! counts against the client IP's restore budget instead, so guessing stays limited, and the
//! per-link table holds only real links). Every limiter is a keyed GCRA
//! (`governor`, on a sharded `DashMap`): a check touches one key's cell, never the whole table.
//! Memory is bounded by dropping keys whose state is back to fresh, every minute and whenever a
//! limiter tracks more than `max_tracked` keys (looked at once every 1,024 checks).

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use sha2::{Digest, Sha256};

use crate::config::RateLimitConfig;
use crate::error::ApiError;
use crate::state::AppState;

/// A public surface with its own per-IP budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `POST /ocart/v1/checkout/capture`.
    Capture,
    /// `GET /r/{token}`: restore links.
    Restore,
    /// `GET /o/{token}`: the open-tracking pixel.
    Pixel,
    /// The public order bump endpoints (eligible, accept, decline).
    Bump,
}

/// One keyed limiter: `limit` requests per `window` per key, as a GCRA with a burst of `limit`
/// that refills one request every `window / limit`. `None` when the limit is 0 (no limit).
struct Keyed<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    max_tracked: usize,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn new(limit: u32, window: Duration, max_tracked: usize) -> Self {
        let limiter = NonZeroU32::new(limit).map(|burst| {
            let period = (window / burst.get()).max(Duration::from_nanos(1));
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(burst))
                .allow_burst(burst);
            DefaultKeyedRateLimiter::dashmap(quota)
        });
        Self {
            limiter,
            max_tracked: max_tracked.max(1),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `key`; `Err(seconds)` when over the limit, with when to retry.
    fn check(&self, key: &K) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023
            && limiter.len() > self.max_tracked
        {
            self.tidy();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            // Round up: retrying after the advertised time must succeed.
            (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
        })
    }

    /// Drops the keys whose state is indistinguishable from a fresh one.
    fn tidy(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// Every public rate limit, and the client IP rule.
pub struct RateLimiter {
    trusted: Vec<IpAddr>,
    capture: Keyed<IpAddr>,
    restore: Keyed<IpAddr>,
    pixel: Keyed<IpAddr>,
    bump: Keyed<IpAddr>,
    /// Keyed by the sha256 of the unsubscribe token.
    unsubscribe: Keyed<[u8; 32]>,
}

impl RateLimiter {
    pub fn new(config: &RateLimitConfig) -> Self {
        let window = Duration::from_secs(config.window_secs.max(1));
        let cap = config.max_tracked;
        Self {
            trusted: config.trusted_proxies.clone(),
            capture: Keyed::new(config.capture_requests, window, cap),
            restore: Keyed::new(config.restore_requests, window, cap),
            pixel: Keyed::new(config.pixel_requests, window, cap),
            bump: Keyed::new(config.bump_requests, window, cap),
            unsubscribe: Keyed::new(config.unsubscribe_per_token, window, cap),
        }
    }

    /// Tidies the limiters every minute for as long as `this` is alive (the task holds only a
    /// weak reference, so it ends with the server).
    pub fn spawn_maintenance(this: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(this);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limits) = weak.upgrade() else {
                    return;
                };
                limits.tidy();
                metrics::gauge!("ocart_rate_limit_tracked_keys").set(limits.tracked() as f64);
            }
        });
    }

    fn tidy(&self) {
        self.capture.tidy();
        self.restore.tidy();
        self.pixel.tidy();
        self.bump.tidy();
        self.unsubscribe.tidy();
    }

    /// Keys tracked by all limiters together.
    pub fn tracked(&self) -> usize {
        self.capture.len()
            + self.restore.len()
            + self.pixel.len()
            + self.bump.len()
            + self.unsubscribe.len()
    }

    /// The client's address: the peer, or (behind a trusted proxy) the right-most address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer_ip = peer.ip();
        if !self.trusted.contains(&peer_ip) {
            return peer_ip;
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !self.trusted.contains(ip))
            .unwrap_or(peer_ip)
    }

    /// Counts one request from `ip` on `bucket`; `Err(seconds)` if over the limit.
    pub fn check(&self, bucket: Bucket, ip: IpAddr) -> Result<(), u64> {
        match bucket {
            Bucket::Capture => self.capture.check(&ip),
            Bucket::Restore => self.restore.check(&ip),
            Bucket::Pixel => self.pixel.check(&ip),
            Bucket::Bump => self.bump.check(&ip),
        }
    }

    /// Counts one request on an unsubscribe link: its own budget, whatever the client IP.
    pub fn check_unsubscribe(&self, token: &str) -> Result<(), ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.unsubscribe.check(&key).map_err(ApiError::RateLimited)
    }
}

/// Middleware: the per-IP limit of `bucket` (preflight `OPTIONS` requests are not counted).
pub async fn per_ip(
    State((state, bucket)): State<(AppState, Bucket)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == Method::OPTIONS {
        return next.run(req).await;
    }
    let ip = state.limiter.client_ip(peer, req.headers());
    match state.limiter.check(bucket, ip) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => ApiError::RateLimited(retry_after).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(limit: u32, window_secs: u64) -> RateLimitConfig {
        RateLimitConfig {
            capture_requests: limit,
            restore_requests: limit,
            pixel_requests: limit,
            unsubscribe_per_token: limit,
            window_secs,
            ..RateLimitConfig::default()
        }
    }

    #[test]
    fn the_limit_applies_per_ip_and_bucket() {
        let limiter = RateLimiter::new(&config(2, 600));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(limiter.check(Bucket::Capture, a).is_ok());
        assert!(limiter.check(Bucket::Capture, a).is_ok());
        let retry = limiter.check(Bucket::Capture, a).unwrap_err();
        // One request comes back every window / limit.
        assert!(retry > 290 && retry <= 300, "{retry}");
        assert!(limiter.check(Bucket::Capture, b).is_ok());
        assert!(
            limiter.check(Bucket::Restore, a).is_ok(),
            "restore has its own budget"
        );
        assert!(
            limiter.check(Bucket::Pixel, a).is_ok(),
            "the pixel has its own budget"
        );
    }

    #[test]
    fn unsubscribe_links_have_a_budget_each() {
        let limiter = RateLimiter::new(&config(1, 600));
        assert!(limiter
            .check_unsubscribe("token-one-aaaaaaaaaaaaaaaa")
            .is_ok());
        assert!(limiter
            .check_unsubscribe("token-one-aaaaaaaaaaaaaaaa")
            .is_err());
        assert!(limiter
            .check_unsubscribe("token-two-bbbbbbbbbbbbbbbb")
            .is_ok());
    }

    #[test]
    fn a_zero_limit_means_no_limit() {
        let limiter = RateLimiter::new(&config(0, 600));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..1000 {
            assert!(limiter.check(Bucket::Capture, a).is_ok());
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn tidying_drops_keys_that_are_fresh_again() {
        let limiter = RateLimiter::new(&RateLimitConfig {
            capture_requests: 1_000_000,
            window_secs: 1,
            ..RateLimitConfig::default()
        });
        for i in 0..2000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(limiter.check(Bucket::Capture, ip).is_ok());
        }
        assert_eq!(limiter.capture.len(), 2000);
        // One request of a million per second is back after a microsecond.
        std::thread::sleep(Duration::from_millis(5));
        limiter.tidy();
        assert_eq!(limiter.capture.len(), 0);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let limiter = RateLimiter::new(&RateLimitConfig {
            trusted_proxies: vec![proxy],
            ..RateLimitConfig::default()
        });
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 127.0.0.1".parse().unwrap());
        assert_eq!(
            limiter.client_ip("127.0.0.1:5000".parse().unwrap(), &headers),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            limiter.client_ip("192.0.2.1:5000".parse().unwrap(), &headers),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }
}
