//! The HTTP routes, one module per area, each exposing `router()`.

pub mod audit;
pub mod capture;
pub mod carts;
pub mod links;
pub mod privacy;
pub mod recovery;
pub mod settings;
pub mod system;
pub mod tokens;

use axum::Router;

use crate::state::AppState;

/// Every authenticated and system route (the public capture route is layered separately).
pub fn api_router() -> Router<AppState> {
    Router::new()
        .merge(carts::router())
        .merge(settings::router())
        .merge(tokens::router())
        .merge(privacy::router())
        .merge(recovery::router())
        .merge(audit::router())
        .merge(system::router())
}
