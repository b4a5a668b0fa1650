//! A/B tests (issue 12): the `AbTest` aggregate (a test's definition, its life from draft to
//! concluded), the `Assignment` aggregate (one unit's variant in one test, its conversion and
//! its pruning) and the deterministic split.
//!
//! A test runs on one surface (the checkout, a bump, an upsell, a recovery email or SMS step);
//! each variant says what it serves there. A unit (the cart on the checkout, bump and upsell
//! surfaces; the recipient of a recovery run) is assigned once: the assignment's stream is named
//! by (test, unit) ([`assignment_id`]), so two first requests for one cart race for the first
//! event of one stream and the loser reads the winner's variant — the log's own optimistic
//! concurrency makes assignment sticky. Frequentist and Bayesian tests split by a hash of
//! (test, unit) and the weights ([`split`]); bandits allocate by Thompson sampling
//! ([`crate::stats::bandit`]). The statistics themselves live in [`crate::stats`].

mod aggregate;
mod assignment;
/// Which running test applies on a surface, and which variant a unit gets.
mod choose;
/// What a conversion is on each surface, and its revenue.
mod conversion;
/// The conclusion process manager's rules: the SRM alert and the verdict with its reason.
mod verdict;

pub use aggregate::{
    serves_layout, AbTest, Surface, TestCommand, TestDefinition, TestError, TestEvent, TestPatch,
    TestStatus, Variant, MAX_NAME_LEN, MAX_SERVES_LEN, MAX_TARGET_LEN, MAX_VARIANTS,
    MAX_VARIANT_KEY_LEN, MAX_WEIGHT, TEST_TYPE,
};
pub use assignment::{
    assignment_id, split, Assignment, AssignmentCommand, AssignmentError, AssignmentEvent,
    ASSIGNMENT_TYPE, MAX_UNIT_LEN,
};
pub use choose::{
    checkout_serves, checkout_test, choose_variant, held_back_offers, offer_test, place,
    recovery_test, thompson_seed, upsell_unit, CheckoutServes, RunningTest,
};
pub use conversion::{
    conversion, Conversion, Success, ORDER_SURFACES, RECOVERY_SURFACES, UPSELL_SURFACES,
};
pub use verdict::{plan_of, srm_alert, verdict, Verdict, SRM_MIN_EXPECTED};
