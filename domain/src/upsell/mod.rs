//! One-click upsells and downsells: the `UpsellAcceptance` aggregate, one per (parent order,
//! funnel, step) — the shopper's decision at one offer step and, when they accepted, the charge
//! and the child order that follow it.
//!
//! The aggregate's id is derived from the parent order, the funnel and the step
//! ([`acceptance_id`]), so "one acceptance per (parent order, step)" is the log's own
//! optimistic concurrency: two accepts race for the first event of one stream and the loser
//! finds the decision already made, whatever idempotency keys they carried.
//!
//! The charge's gateway idempotency key is derived from the acceptance ([`charge_key`]) and
//! recorded in `upsell/before_charge` before any gateway call; the charger (a process manager)
//! sends it on the first call, every retry and every reconciliation.
//!
//! Life of an acceptance:
//!
//! ```text
//! accept ─▶ charging ─┬─▶ succeeded ─▶ accepted (child order written)  ─▶ refunds
//!                     ├─▶ requires_action ─(confirm: read back)─▶ succeeded | declined | …
//!                     ├─▶ declined (the card refused: final)
//!                     └─▶ unknown ─(replay with the same key / read back)─▶ …
//! decline ─▶ declined_by_shopper (the funnel's declined branch: the downsell)
//! ```
//!
//! `unknown` is never shown as declined: the charge may have happened.

mod aggregate;
mod view;

pub use aggregate::{
    acceptance_id, charge_key, refund_key, AcceptInput, AcceptanceStatus, ChargeResult,
    DeclineInput, OrderStrategy, RefundResult, RefundState, RefundStatus, UpsellAcceptance,
    UpsellCommand, UpsellError, UpsellEvent, UpsellKind, ACCEPTANCE_TYPE, MAX_REFUNDS,
};
pub use view::{view_id, ShownStep, UpsellView, ViewCommand, ViewError, ViewEvent};
