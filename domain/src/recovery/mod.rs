//! Abandoned-cart recovery (issue 3). So far: sequence steps, their timing rules, the default
//! sequence and the `RecoverySequence` aggregate. `RecoveryRun` is still to come.

mod sequence;
mod steps;

pub use sequence::{
    RecoverySequence, SequenceCommand, SequenceDefinition, SequenceError, SequenceEvent,
    MAX_NAME_LEN,
};
pub use steps::{
    default_steps, normalise, Channel, Step, TriggerType, MAX_DELAY_MIN, MAX_STEPS, MIN_DELAY_MIN,
};
