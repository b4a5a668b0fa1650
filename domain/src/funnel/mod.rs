//! Funnels: the steps a shopper goes through (checkout, bumps, upsells, downsells, thank-you
//! page) and the rules their graph keeps. The `Funnel` aggregate builds on them (issue 11).

mod aggregate;
mod graph;

pub use aggregate::{
    validate_slug, Funnel, FunnelCommand, FunnelDefinition, FunnelError, FunnelEvent,
    FunnelSettings, FunnelStatus, Layout, Trigger, MAX_NAME_LEN, MAX_SLUG_LEN, MAX_THEME_LEN,
    PRIORITY_RANGE,
};
pub use graph::{
    entry, next_step, validate, Branches, Outcome, Step, StepType, MAX_STEPS, MAX_STEP_KEY_LEN,
};
