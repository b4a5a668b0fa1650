//! Background processors that run in the lease holder (ADR 0005): the outbox relay that
//! publishes the event log to NATS JetStream, the processor lease itself (a PostgreSQL advisory
//! lock or a SQLite lease row), and the process managers.
#![forbid(unsafe_code)]

/// A/B tests: conversions, the conclusion and SRM alert, the retention of assignments.
pub mod abtests;
/// The follow-up of every erasure: deletes the data keys the log says are erased.
mod eraser;
/// Reading the log after a checkpoint, behind the projections: what the log followers share.
pub mod follow;
/// Payment gateways: the contract, Stripe, PayPal, the sandbox.
pub mod gateways;
/// Walking a read table by keyset while it lags behind one's own appends.
mod keyset;
/// Processor leases: one instance at a time runs the background work.
mod lease;
/// The projection group as a supervised processor.
mod projecting;
/// Recovery: the run opener, the dispatcher, channels and templates.
pub mod recovery;
/// The outbox relay to NATS JetStream.
mod relay;
/// Retention: prunes the deliverability feed, expires old carts and erases their shoppers.
mod retention;
/// The store connector: restore hand-over and the WooCommerce REST API.
pub mod store;
/// One shape for every processor (`Processor`), and the supervised run loop.
pub mod supervisor;
/// The abandonment sweeper (process manager).
mod sweeper;
/// One-click upsells: the charger (charges, reconciliation, store orders, refunds).
pub mod upsell;

pub use eraser::{Eraser, ERASER};
pub use lease::{try_acquire, wait_acquire, Lease, LeaseGuard};
pub use projecting::{Projections, PROJECTIONS};
pub use relay::{
    connect, envelope, subject_for, Relay, DEFAULT_BATCH_SIZE, DUPLICATE_WINDOW, RELAY_CHECKPOINT,
    STREAM_NAME, STREAM_SUBJECTS,
};
pub use retention::{Pruned, Retention, RETENTION, RETENTION_EVERY};
pub use sweeper::{Sweeper, SWEEPER};
