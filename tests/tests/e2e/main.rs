//! End-to-end tests through HTTP, the CLI and NATS against real PostgreSQL, SQLite and NATS.
//! One binary; each test gets a fresh database.

mod capture;
mod cli;
mod conformance;
mod coupons;
mod deliverability;
mod journey;
mod orders;
mod platform;
mod processors;
mod recovery;
mod relay;
