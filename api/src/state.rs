//! The state every handler gets, and the request context that becomes event metadata.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use metrics_exporter_prometheus::PrometheusHandle;
use ocart_projections::CommandMeta;
use uuid::Uuid;

use crate::core::Core;
use crate::error::ApiError;
use crate::ratelimit::RateLimiter;

#[derive(Clone)]
pub struct AppState {
    pub core: Arc<Core>,
    pub limiter: Arc<RateLimiter>,
    pub metrics: PrometheusHandle,
    pub nats_enabled: bool,
}

impl AppState {
    /// Waits (bounded) until projection `name` has applied `position` (read-your-writes).
    pub async fn read_your_writes(
        &self,
        name: &str,
        position: Option<i64>,
    ) -> Result<(), ApiError> {
        let position = position.unwrap_or_else(|| self.core.log.head());
        if position <= 0 {
            return Ok(());
        }
        let bound = Duration::from_millis(self.core.config.http.read_your_writes_timeout_ms);
        ocart_projections::wait_for_position(&self.core.db, name, position, bound).await?;
        Ok(())
    }
}

/// Who is asking and from where; with an actor it becomes [`CommandMeta`].
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub request_id: String,
    pub ip: IpAddr,
    /// `OCart-Position` header or `min_position` query: the last write the client saw.
    pub min_position: Option<i64>,
}

impl RequestContext {
    pub fn meta(&self, actor: String, state: &AppState) -> CommandMeta {
        CommandMeta {
            actor,
            request_id: self.request_id.clone(),
            correlation_id: self.request_id.clone(),
            causation_id: None,
            ip: Some(self.ip.to_string()),
            at: state.core.clock.now(),
        }
    }
}

impl FromRequestParts<AppState> for RequestContext {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let ip = state.limiter.client_ip(peer, &parts.headers);
        let from_header = parts
            .headers
            .get("ocart-position")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("min_position="))
                .map(str::to_owned)
        });
        let min_position = match from_header.or(from_query) {
            Some(raw) => Some(raw.parse::<i64>().map_err(|_| {
                ApiError::validation(
                    "min_position",
                    "must be a whole number (a position from an earlier reply)",
                )
            })?),
            None => None,
        };
        Ok(Self {
            request_id,
            ip,
            min_position,
        })
    }
}
