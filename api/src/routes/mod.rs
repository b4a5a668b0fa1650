//! The HTTP routes, one module per area, each exposing `router()`.

pub mod audit;
pub mod capture;
pub mod carts;
pub mod coupons;
pub mod deliverability;
pub mod links;
pub mod orders;
pub mod privacy;
pub mod recovery;
pub mod reports;
pub mod settings;
pub mod system;
pub mod templates;
pub mod tokens;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every authenticated and system route (the public capture route and the links are layered
/// separately). Each module registers its handlers with utoipa-axum's `routes!`, which routes
/// a handler and documents it in one step: the OpenAPI document is made from these routers
/// (`openapi::document`), so a route cannot be served without being documented.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(carts::router())
        .merge(settings::router())
        .merge(tokens::router())
        .merge(privacy::router())
        .merge(recovery::router())
        .merge(OpenApiRouter::from(orders::router()))
        .merge(coupons::router())
        .merge(deliverability::router())
        .merge(reports::router())
        .merge(templates::router())
        .merge(audit::router())
        .merge(system::router())
}

/// Keyset pagination cursors: URL-safe base64 of `time|id`, the sort key of a page's last row.
pub mod keyset {
    use super::*;

    pub fn encode(at: DateTime<Utc>, id: &str) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}|{id}",
            at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ))
    }

    /// `None` for anything this API did not issue.
    pub fn decode(raw: &str) -> Option<(DateTime<Utc>, String)> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let (at, id) = text.split_once('|')?;
        Some((
            DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc),
            id.to_owned(),
        ))
    }
}
