//! A funnel's steps and the branches between them, and the rules a saved funnel keeps: the
//! graph starts at its first step, every branch names a step of the funnel, no path loops, every
//! step is reachable, an upsell or downsell has both outcomes, and an offer step names its
//! offer. Each refusal names the step.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::values::FieldError;

/// The most steps one funnel may hold.
pub const MAX_STEPS: usize = 50;
/// The longest step key.
pub const MAX_STEP_KEY_LEN: usize = 64;

/// What a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepType {
    Checkout,
    Bump,
    Upsell,
    Downsell,
    ThankYou,
    Custom,
}

impl StepType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::Bump => "bump",
            Self::Upsell => "upsell",
            Self::Downsell => "downsell",
            Self::ThankYou => "thank_you",
            Self::Custom => "custom",
        }
    }

    /// Steps that present an offer the shopper accepts or declines.
    pub fn has_outcomes(self) -> bool {
        matches!(self, Self::Upsell | Self::Downsell)
    }

    /// Steps that need an offer.
    pub fn needs_offer(self) -> bool {
        matches!(self, Self::Bump | Self::Upsell | Self::Downsell)
    }
}

/// Where a step goes next, by what the shopper did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branches {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declined: Option<String>,
}

impl Branches {
    fn named(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("default", self.default.as_deref()),
            ("accepted", self.accepted.as_deref()),
            ("declined", self.declined.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, to)| to.map(|to| (name, to)))
    }
}

/// One step of a funnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The step's key, unique in its funnel (`upsell-1`).
    pub key: String,
    #[serde(rename = "type")]
    pub kind: StepType,
    pub position: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    #[serde(default)]
    pub branches: Branches,
}

/// What the shopper did at a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Went on (a checkout, a thank-you page, a custom step).
    Default,
    Accepted,
    Declined,
}

/// The step that follows `from` after `outcome`: the outcome's branch, else the default one.
pub fn next_step<'a>(steps: &'a [Step], from: &str, outcome: Outcome) -> Option<&'a Step> {
    let step = steps.iter().find(|s| s.key == from)?;
    let b = &step.branches;
    let to = match outcome {
        Outcome::Default => b.default.as_deref(),
        Outcome::Accepted => b.accepted.as_deref().or(b.default.as_deref()),
        Outcome::Declined => b.declined.as_deref().or(b.default.as_deref()),
    }?;
    steps.iter().find(|s| s.key == to)
}

/// The entry step: the lowest position.
pub fn entry(steps: &[Step]) -> Option<&Step> {
    steps.iter().min_by_key(|s| s.position)
}

/// Checks a funnel's steps; every refusal names the step (`steps[2]` and its key).
pub fn validate(steps: &[Step]) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    if steps.is_empty() {
        errors.push(FieldError::new("steps", "a funnel needs at least one step"));
        return Err(errors);
    }
    if steps.len() > MAX_STEPS {
        errors.push(FieldError::new(
            "steps",
            format!("holds {} steps; at most {MAX_STEPS}", steps.len()),
        ));
        return Err(errors);
    }
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    let mut positions = BTreeSet::new();
    for (i, step) in steps.iter().enumerate() {
        let at = |field: &str| format!("steps[{i}].{field}");
        let len = step.key.chars().count();
        if len == 0
            || len > MAX_STEP_KEY_LEN
            || !step
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            errors.push(FieldError::new(
                at("key"),
                format!("must be 1 to {MAX_STEP_KEY_LEN} of a-z, A-Z, 0-9, - and _"),
            ));
        } else if index.insert(step.key.as_str(), i).is_some() {
            errors.push(FieldError::new(
                at("key"),
                format!("step {:?} appears twice", step.key),
            ));
        }
        if !positions.insert(step.position) {
            errors.push(FieldError::new(
                at("position"),
                format!("position {} is taken by another step", step.position),
            ));
        }
        if step.kind.needs_offer() && step.offer_id.as_deref().is_none_or(str::is_empty) {
            errors.push(FieldError::new(
                at("offer_id"),
                format!(
                    "step {:?} is a {} and needs an offer",
                    step.key,
                    step.kind.as_str()
                ),
            ));
        }
        if step.kind.has_outcomes()
            && (step.branches.accepted.is_none() || step.branches.declined.is_none())
            && step.branches.default.is_none()
        {
            errors.push(FieldError::new(
                at("branches"),
                format!(
                    "step {:?} is a {} and needs both an accepted and a declined branch (or a default)",
                    step.key,
                    step.kind.as_str()
                ),
            ));
        }
        if step.kind == StepType::ThankYou && step.branches.named().next().is_some() {
            errors.push(FieldError::new(
                at("branches"),
                format!(
                    "step {:?} is a thank-you page and ends the funnel",
                    step.key
                ),
            ));
        }
    }
    for (i, step) in steps.iter().enumerate() {
        for (name, to) in step.branches.named() {
            if !index.contains_key(to) {
                errors.push(FieldError::new(
                    format!("steps[{i}].branches.{name}"),
                    format!(
                        "step {:?} goes to {to:?}, which is not a step of this funnel",
                        step.key
                    ),
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Cycles: a depth-first walk from every step, colouring steps on the current path.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; steps.len()];
    fn walk(
        i: usize,
        steps: &[Step],
        index: &BTreeMap<&str, usize>,
        marks: &mut [Mark],
    ) -> Option<usize> {
        marks[i] = Mark::OnPath;
        for (_, to) in steps[i].branches.named() {
            let j = index[to];
            match marks[j] {
                Mark::OnPath => return Some(j),
                Mark::New => {
                    if let Some(found) = walk(j, steps, index, marks) {
                        return Some(found);
                    }
                }
                Mark::Done => {}
            }
        }
        marks[i] = Mark::Done;
        None
    }
    for i in 0..steps.len() {
        if marks[i] == Mark::New {
            if let Some(j) = walk(i, steps, &index, &mut marks) {
                errors.push(FieldError::new(
                    format!("steps[{j}].branches"),
                    format!(
                        "step {:?} can be reached again from itself (a cycle)",
                        steps[j].key
                    ),
                ));
                return Err(errors);
            }
        }
    }
    // Reachability from the entry.
    let start = entry(steps).map(|s| index[s.key.as_str()]).unwrap_or(0);
    let mut seen = vec![false; steps.len()];
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        stack.extend(steps[i].branches.named().map(|(_, to)| index[to]));
    }
    for (i, step) in steps.iter().enumerate() {
        if !seen[i] {
            errors.push(FieldError::new(
                format!("steps[{i}]"),
                format!("step {:?} cannot be reached from the first step", step.key),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(key: &str, kind: StepType, position: u32, branches: &[(&str, &str)]) -> Step {
        let mut b = Branches::default();
        for (name, to) in branches {
            let to = Some((*to).to_owned());
            match *name {
                "default" => b.default = to,
                "accepted" => b.accepted = to,
                _ => b.declined = to,
            }
        }
        Step {
            key: key.into(),
            kind,
            position,
            offer_id: kind.needs_offer().then(|| format!("offer-{key}")),
            branches: b,
        }
    }

    /// checkout → upsell → (accepted: thanks, declined: downsell → thanks)
    fn classic() -> Vec<Step> {
        use StepType::*;
        vec![
            step("checkout", Checkout, 0, &[("default", "upsell")]),
            step(
                "upsell",
                Upsell,
                1,
                &[("accepted", "thanks"), ("declined", "downsell")],
            ),
            step(
                "downsell",
                Downsell,
                2,
                &[("accepted", "thanks"), ("declined", "thanks")],
            ),
            step("thanks", ThankYou, 3, &[]),
        ]
    }

    #[test]
    fn funnels_that_break_a_rule_are_refused_naming_the_step() {
        use StepType::*;
        let with = |f: &dyn Fn(&mut Vec<Step>)| {
            let mut s = classic();
            f(&mut s);
            s
        };
        let cases: Vec<(&str, Vec<Step>, Option<&str>)> = vec![
            (
                "checkout, upsell, downsell, thank-you is a funnel",
                classic(),
                None,
            ),
            (
                "one thank-you page is a funnel",
                vec![step("t", ThankYou, 0, &[])],
                None,
            ),
            ("no steps is refused", vec![], Some("steps")),
            (
                "a branch to a missing step is refused",
                with(&|s| s[1].branches.accepted = Some("nowhere".into())),
                Some("steps[1].branches.accepted"),
            ),
            (
                "an upsell without a declined branch is refused",
                with(&|s| s[1].branches.declined = None),
                Some("steps[1].branches"),
            ),
            (
                "a downsell without an offer is refused",
                with(&|s| s[2].offer_id = None),
                Some("steps[2].offer_id"),
            ),
            (
                "a loop back to the upsell is refused",
                with(&|s| s[2].branches.declined = Some("upsell".into())),
                Some("steps[1].branches"),
            ),
            (
                "a step pointing at itself is refused",
                with(&|s| s[0].branches.default = Some("checkout".into())),
                Some("steps[0].branches"),
            ),
            (
                "an unreachable step is refused",
                with(&|s| s.push(step("orphan", Custom, 9, &[]))),
                Some("steps[4]"),
            ),
            (
                "two steps with one key are refused",
                with(&|s| s[3].key = "upsell".into()),
                Some("steps[3].key"),
            ),
            (
                "two steps at one position are refused",
                with(&|s| s[3].position = 1),
                Some("steps[3].position"),
            ),
            (
                "a thank-you page that goes on is refused",
                with(&|s| s[3].branches.default = Some("checkout".into())),
                Some("steps[3].branches"),
            ),
            (
                "a key with spaces or multi-byte text is refused",
                with(&|s| {
                    s[3].key = "merci ü".into();
                    s[1].branches.accepted = Some("merci ü".into());
                    s[2].branches = Branches {
                        default: Some("merci ü".into()),
                        ..Branches::default()
                    };
                }),
                Some("steps[3].key"),
            ),
        ];
        for (name, steps, expected) in cases {
            let got = validate(&steps).err().map(|e| e[0].field.clone());
            assert_eq!(got.as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn the_next_step_follows_the_outcome_then_the_default() {
        let s = classic();
        let next = |from, outcome| next_step(&s, from, outcome).map(|s| s.key.as_str());
        assert_eq!(entry(&s).map(|s| s.key.as_str()), Some("checkout"));
        assert_eq!(next("checkout", Outcome::Default), Some("upsell"));
        assert_eq!(next("upsell", Outcome::Accepted), Some("thanks"));
        assert_eq!(next("upsell", Outcome::Declined), Some("downsell"));
        assert_eq!(
            next("thanks", Outcome::Default),
            None,
            "the thank-you page ends it"
        );
        assert_eq!(
            next("checkout", Outcome::Accepted),
            Some("upsell"),
            "no branch: the default"
        );
        assert_eq!(next("missing", Outcome::Default), None);
    }
}
