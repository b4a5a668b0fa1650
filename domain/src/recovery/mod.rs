//! Abandoned-cart recovery (issue 3). So far: sequence steps, their timing rules and the
//! default sequence. The `RecoverySequence` and `RecoveryRun` aggregates build on these.

mod steps;

pub use steps::{
    default_steps, normalise, Channel, Step, TriggerType, MAX_DELAY_MIN, MAX_STEPS, MIN_DELAY_MIN,
};
