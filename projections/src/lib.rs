//! Event-store adapters (PostgreSQL, SQLite), the gap-free global reader, the key vault,
//! checkpointed projectors for each read table, and the read queries the API uses.
// Only the SQLite global reader steps rows on the raw handle (ADR 0007); it allows itself.
#![deny(unsafe_code)]

/// One handle over both backends, and the SQL helpers that let one text serve both.
mod db;
/// The event log: loads, group-committed appends, the global reader.
mod store;

pub use db::{database_url, lite_sql, redact, Backend, Db, Tx};
pub use store::{AppendError, Checkpoint, Committed, EventLog, NewEvent, StoredEvent, StreamWatch};
/// Runs commands over the log, returning committed positions (cqrs-es plain event-store mode).
mod commands;
/// The projectors, each the only writer of its read tables.
mod projectors;
/// Read queries used by the API and CLI.
pub mod queries;
/// The projection runner, checkpoints and read-your-writes waiting.
mod runner;
/// The key vault: subject hashes, sealing, erasure.
mod vault;

pub use commands::{
    decode_event, CommandError, CommandMeta, Commands, Emitted, Outcome as CommandOutcome,
    MAX_ATTEMPTS,
};
pub use projectors::AbTestsProjector;
pub use projectors::FunnelReportsProjector;
pub use projectors::UpsellsProjector;
pub use projectors::{
    AuditProjector, CartsProjector, FunnelsProjector, OffersProjector, OrdersProjector,
    RecoveryRunsProjector, RecoverySequencesProjector, SettingsProjector, SuppressionProjector,
    TokensProjector,
};
pub use runner::{
    checkpoint_of, load_checkpoint, save_checkpoint, wait_for_position, Outcome, ProjectionGroup,
    ProjectionRunner, Projector, COALESCE,
};
pub use vault::{Vault, VaultError};
/// Hash-chain verification of the whole log (`ocart audit verify`).
mod chain;
pub use chain::{verify_chain, Broken, ChainReport};
