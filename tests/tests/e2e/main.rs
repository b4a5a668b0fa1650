//! End-to-end tests through HTTP, the CLI and NATS against real PostgreSQL, SQLite and NATS.
//! One binary; each test gets a fresh database.
#![forbid(unsafe_code)]

mod abtest_processors;
mod abtest_surfaces;
mod abtests;
mod assign;
mod bandit;
mod capture;
mod charges;
mod cli;
mod conformance;
mod cors;
mod coupons;
mod deliverability;
mod dkim;
mod edges;
mod erasure;
mod export;
mod followups;
mod funnel_reports;
mod funnels;
mod gateways;
mod journey;
mod kill;
mod offers;
mod orders;
mod paypal;
mod platform;
mod processors;
mod rebuild;
mod recovery;
mod relay;
mod rotation;
mod stats;
mod stripe;
mod upsell_faults;
mod upsell_flow;
mod upsells;
