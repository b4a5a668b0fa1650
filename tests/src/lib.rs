//! Test harness: fresh databases (a uniquely named PostgreSQL database, or a SQLite file in a
//! temporary folder), dropped afterwards; a nats-server of the test's own; the app on port 0;
//! fakes at the edge of the world (SMTP, WooCommerce, DNS); the `ocart` binary.
#![forbid(unsafe_code)]

/// The app on port 0: config, start and stop, request helpers, `settle` and `eventually`.
mod app;
/// The `ocart` binary: built on first use, run against a test's database.
mod cli;
/// Fresh databases (PostgreSQL or SQLite), dropped afterwards.
mod db;
/// A fake authoritative DNS server (TXT records).
mod dns;
/// NATS: the shared server, or a nats-server process of a test's own.
mod nats;
/// A fake PayPal REST API (OAuth2, Orders v2 with vaulted sources, refunds, webhooks).
mod paypal;
/// A fake SMTP server that keeps every message it accepts.
mod smtp;
/// A fake Stripe API (PaymentIntents, Refunds, idempotency) and its signed events.
mod stripe;
/// A fake WooCommerce store and its signed order webhooks.
mod woo;

pub use app::{
    capture_body, outbox_emails, read, session, spawn_app, spawn_app_with, spawn_on, start_time,
    test_config, TestApp,
};
pub use cli::{ocart, ocart_bin, serve_in, wait_until_serving};
pub use db::{pg_admin_url, FreshDb, Kind};
pub use dns::DnsServer;
pub use nats::{free_port, nats_url, pull_all, NatsServer};
pub use paypal::{
    FakeCapture, FakeOrder, FakePayPal, PayPalState, PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET,
    PAYPAL_WEBHOOK_ID, VAULT_DECLINED, VAULT_OK, VAULT_PAYER_ACTION,
};
pub use smtp::{SinkMessage, SmtpSink};
pub use stripe::{
    FakeStripe, StripeRequest, StripeState, PM_3DS, PM_DECLINED, PM_INSUFFICIENT_FUNDS, PM_VISA,
    STRIPE_KEY, STRIPE_WEBHOOK_SECRET,
};
pub use woo::{
    wc_order, wc_signature, wp_json_encode, FakeWoo, WooState, WOO_KEY, WOO_SECRET,
    WOO_WEBHOOK_SECRET,
};
