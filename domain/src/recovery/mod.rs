//! Abandoned-cart recovery: sequence steps and their timing rules, the default sequence, the
//! `RecoverySequence` aggregate, and the `RecoveryRun` aggregate (one cart through one
//! sequence: claims, sends, failures and retries, conversion, stops).

mod eligibility;
mod feed;
/// The send guards: a pure decision over typed facts.
mod guards;
/// The restore link's expiry and refusals.
mod restore;
mod run;
mod sequence;
mod steps;
mod suppression;
mod template;

pub use eligibility::cart_may_get_coupon;
pub use feed::{
    feed_cutoff, prune_moves, DeliverabilityFeed, FeedCommand, FeedError, FeedEvent, FEED_ID,
};
pub use guards::{
    send_verdict, CartFacts, CartState, GuardSettings, HoldReason, OtherRun, RunState, SendFacts,
    SendVerdict,
};
pub use restore::{restore_link_expired, restore_refusal, RestoreCart};
pub use run::{
    message_key, run_earns_credit, Claim, DeliveryKind, DeliveryReport, IssuedCoupon, LinkHashes,
    RecoveryRun, RestoreFailure, RestoreOutcome, RunCommand, RunError, RunEvent, RunStart,
    RunStatus, StopReason, MAX_ATTEMPTS, RETRY_STEP_MIN,
};

pub use sequence::{
    RecoverySequence, SequenceCommand, SequenceDefinition, SequenceError, SequenceEvent,
    MAX_NAME_LEN,
};
pub use steps::{
    default_steps, normalise, Channel, CouponKind, Discount, Step, TriggerType, MAX_DELAY_MIN,
    MAX_STEPS, MIN_DELAY_MIN,
};
pub use suppression::{
    report_suppresses, Suppression, SuppressionCommand, SuppressionError, SuppressionEvent,
    SuppressionReason,
};
pub use template::{
    check_template_id, RecoveryTemplate, TemplateCommand, TemplateContent, TemplateError,
    TemplateEvent, MAX_PART_LEN,
};
