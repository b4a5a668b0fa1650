//! The recovery read tables, in four projectors. Each alone writes its tables and, while it
//! applies, reads only them, so each rebuilds on its own (`ocart replay --projection NAME`):
//!
//! - `recovery_sequences` ([`RecoverySequencesProjector`]): `recovery_sequences` and
//!   `recovery_templates`, from sequence and template events;
//! - `recovery_runs` ([`RecoveryRunsProjector`]): `recovery_runs`, `recovery_notifications`,
//!   `recovery_links`, `recovery_restores`, `recovery_coupons` and the deliverability feed
//!   `deliverability_events`, from run events, the coupon codes of recorded orders, the feed
//!   rows of unsubscribes and the feed's cut-offs. A link, restore, coupon or feed row takes
//!   its cart, recipient or channel from the run and its messages, so they are one projector;
//! - `suppression` ([`SuppressionProjector`]): `suppression`;
//! - `orders` ([`OrdersProjector`]): `orders`.
//!
//! One `recovery` projector wrote all of them before; migration 0011 gave its checkpoint to
//! each of the four, so a database projected under the old name applies no event twice.

mod feed;
mod orders;
mod runs;
mod sequences;
mod suppression;

pub use orders::OrdersProjector;
pub use runs::RecoveryRunsProjector;
pub use sequences::RecoverySequencesProjector;
pub use suppression::SuppressionProjector;
