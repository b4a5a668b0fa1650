//! A/B tests' process managers (issue 12): the conversions (a log follower that turns each
//! surface's success into `test/converted`), the conclusion (a periodic pass that raises the
//! SRM alert and concludes tests) and the retention of assignments.

/// The conclusion and the SRM alert over the running tests.
mod conclusion;
/// Conversions: orders, bumps, upsells and recoveries converting the units' assignments.
mod conversions;
/// Pruning assignments past `recovery.test_assignment_days`.
mod pruning;

pub use conclusion::{AbTestConcluder, Judged, CONCLUDER, CONCLUDE_EVERY};
pub use conversions::{AbTestConversions, Converted, CONVERSIONS};
pub use pruning::{AssignmentRetention, AssignmentsPruned, ASSIGNMENT_RETENTION};
