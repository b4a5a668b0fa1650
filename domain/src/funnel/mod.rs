//! Funnels: the steps a shopper goes through (checkout, bumps, upsells, downsells, thank-you
//! page) and the rules their graph keeps. The `Funnel` aggregate builds on them (issue 11).

mod graph;

pub use graph::{
    entry, next_step, validate, Branches, Outcome, Step, StepType, MAX_STEPS, MAX_STEP_KEY_LEN,
};
