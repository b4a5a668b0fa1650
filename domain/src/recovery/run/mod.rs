//! The `RecoveryRun` aggregate: one cart going through one sequence. It decides, and records,
//! which step is due, which step a dispatcher has claimed, what was sent and what failed, and
//! when the run ends (converted, or stopped with a reason).
//!
//! Exactly-once sending rests on two rules. A step is sent only under a claim, and a claim is
//! an event appended at the run's next sequence number, so of two dispatchers racing for the
//! same step one append wins and the other is refused. A claim names its message key (run,
//! step, attempt), which becomes the email's Message-ID: a dispatcher that finds a claim left
//! behind by a crash takes it over with the same key, so the message it sends is the same
//! message, recognisable as such downstream, and the takeover is itself recorded.

mod aggregate;
mod commands;
mod events;

pub use aggregate::{
    message_key, run_earns_credit, Claim, RecoveryRun, RunStatus, MAX_ATTEMPTS, RETRY_STEP_MIN,
};
pub use commands::RunCommand;
pub use events::{
    DeliveryKind, DeliveryReport, IssuedCoupon, LinkHashes, RestoreFailure, RestoreOutcome,
    RunError, RunEvent, RunStart, StopReason,
};
