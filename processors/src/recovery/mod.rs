//! Abandoned-cart recovery process managers: the opener (follows the log: abandonment opens a
//! run, conversion credits it, a cart coming back stops it) and the dispatcher (sends due steps
//! under atomic claims, after the send guards), with their channels and templates.

/// Email (lettre: SMTP or the `.eml` outbox) and SMS (Twilio-compatible or the outbox log).
pub mod channels;
/// Recovery coupons: issued on coupon steps, expired when unused.
pub mod coupons;
/// Due runs → guards → claim → send → record.
mod dispatcher;
/// DKIM keys, the signed headers and the DNS record to publish.
pub mod dkim;
/// Log follower for what orders and delivery reports entail: a buyer's other runs stopped, a
/// bouncing or complaining recipient suppressed.
mod followups;
/// Log follower that opens, converts and stops runs.
mod opener;
/// One message rendered from its run, cart, step, template and links (no IO).
mod render;
/// minijinja templates and merge tags.
pub mod templates;

pub use dispatcher::{
    outbox_dir, Decision, Dispatcher, PassReport, Planned, RecoveryConfig, DISPATCHER,
};
pub use followups::{RecoveryFollowUps, FOLLOWUPS};
pub use opener::{opener_checkpoint, run_id_for, RecoveryOpener, OPENER};
