//! The HTTP API and the `ocart` command line, over the projections and processors crates.
#![forbid(unsafe_code)]

/// The server and its background processors.
mod app;
/// Bearer-token auth and capabilities.
mod auth;
/// The `ocart` command line.
pub mod cli;
/// Typed, layered configuration.
pub mod config;
/// What HTTP and the CLI share: store, vault, command executors, projectors.
pub mod core;
/// CORS for the shopper routes the store's checkout page calls.
mod cors;
/// SPF, DKIM and DMARC checks of a sending domain.
pub mod dnscheck;
/// RFC 9457 problem documents.
mod error;
/// Query and path extractors, and the layer that makes every error a problem document.
mod extract;
/// Payment gateways on the HTTP side: Stripe's webhook signature.
pub mod gateways;
/// The JSON body extractor.
mod json;
/// The OpenAPI document.
pub mod openapi;
/// Parsers of query and CLI values (ages, times) that never panic.
mod params;
/// Per-IP rate limits and client IP resolution.
mod ratelimit;
/// Routes, one module per area.
mod routes;
/// The rotated gateway secrets the verifiers accept, cached and read again every second.
pub mod secret_ring;
/// Values held in memory for the hot reads: single flight, stale while refreshing.
mod snapshot;
/// Handler state and request context.
mod state;
/// The hosted one-click offer page (server-rendered HTML).
pub mod upsell_page;
/// One-click upsell tokens: signed, bound to an order, a step and an offer, short-lived.
pub mod upsell_token;
/// The application layer: one use case per file, called by HTTP handlers and CLI commands.
pub mod usecases;

pub use app::Application;
pub use config::Config;
pub use error::{ApiError, Problem};
