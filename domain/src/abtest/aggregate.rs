//! The `AbTest` aggregate: one A/B test, identified by a server-made id. It holds what is
//! tested (the surface, an optional target on it, the variants with their weights and what each
//! serves), how it is judged (method, minimum detectable effect, power, significance, an
//! optional planned baseline rate) and where it stands:
//!
//! ```text
//! draft ──start──▶ running ──stop──▶ stopped ──start──▶ running
//!                     └──conclude (the process manager)──▶ concluded (final)
//! draft | stopped ──delete──▶ (gone)
//! ```
//!
//! What decides the split (variants, weights, method) changes only in `draft`: a running or
//! stopped test keeps the split its assignments were made with. The first variant is the
//! control.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::funnel::{validate_slug, Layout};
use crate::stats::conclude::Method;
use crate::FieldError;

/// The aggregate type of tests in the log.
pub const TEST_TYPE: &str = "test";
/// The longest test name.
pub const MAX_NAME_LEN: usize = 200;
/// The most variants a test has (the control included); the statistics take as many.
pub const MAX_VARIANTS: usize = crate::stats::bayes::MAX_ARMS;
/// The longest variant key.
pub const MAX_VARIANT_KEY_LEN: usize = 64;
/// The largest weight of one variant.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// The longest `serves` value (a funnel slug, a layout, an offer id, a template name).
pub const MAX_SERVES_LEN: usize = 200;
/// The longest target.
pub const MAX_TARGET_LEN: usize = 200;

/// Where a test runs, and so what a variant serves and what a unit and a conversion are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Surface {
    /// The checkout: a variant serves a funnel (its slug) or a layout (`one_step`, `two_step`,
    /// `three_step`); the unit is the cart; a conversion is the cart's order.
    Checkout,
    /// An order bump: a variant serves an offer; the unit is the cart; a conversion is the
    /// bump accepted and its order paid.
    Bump,
    /// A post-purchase upsell step: a variant serves an offer; the unit is the parent order's
    /// cart; a conversion is the upsell accepted and charged.
    Upsell,
    /// A recovery email step: a variant serves a template; the unit is the recipient's run; a
    /// conversion is a recovered order attributed to the run.
    RecoveryEmail,
    /// A recovery SMS step, as `recovery_email`.
    RecoverySms,
}

impl Surface {
    pub const ALL: [Surface; 5] = [
        Self::Checkout,
        Self::Bump,
        Self::Upsell,
        Self::RecoveryEmail,
        Self::RecoverySms,
    ];

    /// The surface as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkout => "checkout",
            Self::Bump => "bump",
            Self::Upsell => "upsell",
            Self::RecoveryEmail => "recovery_email",
            Self::RecoverySms => "recovery_sms",
        }
    }

    /// The surface of a stored or sent name.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// What a variant's `serves` names on this surface, for messages.
    fn serves_what(self) -> &'static str {
        match self {
            Self::Checkout => "a funnel slug or a layout (one_step, two_step, three_step)",
            Self::Bump | Self::Upsell => "an offer id",
            Self::RecoveryEmail | Self::RecoverySms => "a template name",
        }
    }

    /// Whether `serves` has the shape this surface's variants serve.
    fn serves_ok(self, serves: &str) -> bool {
        let id_like = |s: &str| {
            !s.is_empty()
                && s.len() <= MAX_SERVES_LEN
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        };
        match self {
            Self::Checkout => {
                serves_layout(serves).is_some() || validate_slug("serves", serves).is_ok()
            }
            Self::Bump | Self::Upsell | Self::RecoveryEmail | Self::RecoverySms => id_like(serves),
        }
    }
}

/// The layout a checkout variant's `serves` names, if it names one (a funnel slug never has
/// `_`, a layout always has).
pub fn serves_layout(serves: &str) -> Option<Layout> {
    match serves {
        "one_step" => Some(Layout::OneStep),
        "two_step" => Some(Layout::TwoStep),
        "three_step" => Some(Layout::ThreeStep),
        _ => None,
    }
}

/// One arm of a test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Unique in its test: 1 to 64 of `a-z`, `A-Z`, `0-9`, `-` and `_`.
    pub key: String,
    /// Its share of the traffic relative to the others' (1 to 1,000,000).
    pub weight: u32,
    /// What it serves on the test's surface.
    pub serves: String,
}

/// Where a test stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    #[default]
    Draft,
    Running,
    Stopped,
    Concluded,
}

impl TestStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Running => "running",
            Self::Stopped => "stopped",
            Self::Concluded => "concluded",
        }
    }
}

/// What a test is, as recorded: every `test/created` and `test/updated` carries all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestDefinition {
    pub name: String,
    pub surface: Surface,
    /// What is tested on the surface: on the checkout a funnel slug (the test applies to the
    /// carts that funnel takes; `None`: every cart); on a bump or upsell the offer whose place
    /// the variants take; on recovery the sequence (`None`: the steps whose `ab_test` names
    /// the test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The control first.
    pub variants: Vec<Variant>,
    pub method: Method,
    /// The relative change the test is planned to detect (0.1 = +10 %).
    pub mde_relative: f64,
    /// The probability of detecting it.
    pub power_target: f64,
    /// The confidence (1 − α) a winner needs.
    pub significance: f64,
    /// The control's expected rate, for the planned sample size; `None`: the control's
    /// observed rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_rate: Option<f64>,
}

impl TestDefinition {
    /// The definition for these fields, checked and normalised (names trimmed), every problem
    /// reported at once.
    pub fn checked(mut self) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        self.name = self.name.trim().to_owned();
        if self.name.is_empty() {
            errors.push(FieldError::new("name", "name the test"));
        } else if self.name.chars().count() > MAX_NAME_LEN {
            errors.push(FieldError::new(
                "name",
                format!("at most {MAX_NAME_LEN} characters"),
            ));
        }
        if let Some(target) = &self.target {
            let target = target.trim();
            if target.is_empty() || target.chars().count() > MAX_TARGET_LEN {
                errors.push(FieldError::new(
                    "target",
                    format!("must be 1 to {MAX_TARGET_LEN} characters"),
                ));
            }
            self.target = Some(target.to_owned());
        }
        if !(2..=MAX_VARIANTS).contains(&self.variants.len()) {
            errors.push(FieldError::new(
                "variants",
                format!("give 2 to {MAX_VARIANTS} variants, the control first"),
            ));
        }
        for (i, v) in self.variants.iter_mut().enumerate() {
            v.key = v.key.trim().to_owned();
            v.serves = v.serves.trim().to_owned();
            let key_ok = !v.key.is_empty()
                && v.key.len() <= MAX_VARIANT_KEY_LEN
                && v.key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !key_ok {
                errors.push(FieldError::new(
                    format!("variants[{i}].key"),
                    format!("must be 1 to {MAX_VARIANT_KEY_LEN} of A-Z, a-z, 0-9, - and _"),
                ));
            }
            if !(1..=MAX_WEIGHT).contains(&v.weight) {
                errors.push(FieldError::new(
                    format!("variants[{i}].weight"),
                    format!("must be from 1 to {MAX_WEIGHT}"),
                ));
            }
            if !self.surface.serves_ok(&v.serves) {
                errors.push(FieldError::new(
                    format!("variants[{i}].serves"),
                    format!(
                        "on the {} surface a variant serves {}",
                        self.surface.as_str(),
                        self.surface.serves_what()
                    ),
                ));
            }
        }
        for (i, v) in self.variants.iter().enumerate() {
            if self.variants[..i].iter().any(|w| w.key == v.key) {
                errors.push(FieldError::new(
                    format!("variants[{i}].key"),
                    format!("the key {:?} is used by an earlier variant", v.key),
                ));
            }
        }
        let mut range = |field: &str, value: f64, low: f64, high: f64| {
            if !(value.is_finite() && value >= low && value <= high) {
                errors.push(FieldError::new(
                    field,
                    format!("must be from {low} to {high}"),
                ));
            }
        };
        range("mde_relative", self.mde_relative, 0.001, 10.0);
        range("power_target", self.power_target, 0.5, 0.999);
        range("significance", self.significance, 0.5, 0.999);
        if let Some(rate) = self.baseline_rate {
            if !(rate.is_finite() && rate > 0.0 && rate < 1.0) {
                errors.push(FieldError::new(
                    "baseline_rate",
                    "must be strictly between 0 and 1",
                ));
            }
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    /// The variants' weights, in order.
    pub fn weights(&self) -> Vec<u32> {
        self.variants.iter().map(|v| v.weight).collect()
    }

    /// The index of the variant with this key.
    pub fn variant_index(&self, key: &str) -> Option<usize> {
        self.variants.iter().position(|v| v.key == key)
    }
}

/// Changes to a draft test; `None` keeps the current value. A running or stopped test takes
/// only a new name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestPatch {
    pub name: Option<String>,
    pub target: Option<Option<String>>,
    pub variants: Option<Vec<Variant>>,
    pub method: Option<Method>,
    pub mde_relative: Option<f64>,
    pub power_target: Option<f64>,
    pub significance: Option<f64>,
    pub baseline_rate: Option<Option<f64>>,
}

impl TestPatch {
    /// Whether the patch changes anything but the name.
    fn touches_the_plan(&self) -> bool {
        self.target.is_some()
            || self.variants.is_some()
            || self.method.is_some()
            || self.mde_relative.is_some()
            || self.power_target.is_some()
            || self.significance.is_some()
            || self.baseline_rate.is_some()
    }

    fn applied_to(self, current: &TestDefinition) -> TestDefinition {
        TestDefinition {
            name: self.name.unwrap_or_else(|| current.name.clone()),
            surface: current.surface,
            target: self.target.unwrap_or_else(|| current.target.clone()),
            variants: self.variants.unwrap_or_else(|| current.variants.clone()),
            method: self.method.unwrap_or(current.method),
            mde_relative: self.mde_relative.unwrap_or(current.mde_relative),
            power_target: self.power_target.unwrap_or(current.power_target),
            significance: self.significance.unwrap_or(current.significance),
            baseline_rate: self.baseline_rate.unwrap_or(current.baseline_rate),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestCommand {
    Create {
        definition: TestDefinition,
        at: DateTime<Utc>,
    },
    Update {
        patch: TestPatch,
        at: DateTime<Utc>,
    },
    Start {
        at: DateTime<Utc>,
    },
    Stop {
        at: DateTime<Utc>,
    },
    Delete {
        at: DateTime<Utc>,
    },
    /// The conclusion process manager's verdict on a running test: `winner` is a variant key,
    /// or `None` when the test ended with no difference detected.
    Conclude {
        winner: Option<String>,
        reason: String,
        at: DateTime<Utc>,
    },
    /// The sample-ratio-mismatch alert (recorded once per run of the test).
    FlagSrm {
        chi2: f64,
        p_value: f64,
        visitors: Vec<u64>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum TestEvent {
    #[serde(rename = "test/created")]
    Created {
        definition: TestDefinition,
        at: DateTime<Utc>,
    },
    #[serde(rename = "test/updated")]
    Updated {
        definition: TestDefinition,
        at: DateTime<Utc>,
    },
    #[serde(rename = "test/started")]
    Started { at: DateTime<Utc> },
    #[serde(rename = "test/stopped")]
    Stopped { at: DateTime<Utc> },
    #[serde(rename = "test/deleted")]
    Deleted { at: DateTime<Utc> },
    #[serde(rename = "test/concluded")]
    Concluded {
        /// The winning variant's key; `None`: no difference detected.
        winner: Option<String>,
        reason: String,
        at: DateTime<Utc>,
    },
    #[serde(rename = "test/srm_detected")]
    SrmDetected {
        chi2: f64,
        p_value: f64,
        /// The variants' visitors the test was run on, in order.
        visitors: Vec<u64>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for TestEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Created { .. } => "test/created",
            Self::Updated { .. } => "test/updated",
            Self::Started { .. } => "test/started",
            Self::Stopped { .. } => "test/stopped",
            Self::Deleted { .. } => "test/deleted",
            Self::Concluded { .. } => "test/concluded",
            Self::SrmDetected { .. } => "test/srm_detected",
        }
        .into()
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TestError {
    #[error("the test is not valid")]
    Invalid(Vec<FieldError>),
    #[error("a test with this id exists")]
    Exists,
    #[error("no such test")]
    NotFound,
    /// The command does not apply in the test's status (named).
    #[error("the test is {0}")]
    WrongStatus(&'static str),
    #[error("the winner is not one of the test's variants")]
    UnknownWinner,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AbTest {
    definition: Option<TestDefinition>,
    status: TestStatus,
    deleted: bool,
    winner: Option<String>,
    /// Whether this run of the test has raised its SRM alert.
    srm_flagged: bool,
    created_at: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
}

impl AbTest {
    /// What the test is; `None` before it is created and after it is deleted.
    pub fn definition(&self) -> Option<&TestDefinition> {
        self.definition.as_ref().filter(|_| !self.deleted)
    }

    pub fn status(&self) -> TestStatus {
        self.status
    }

    /// The winning variant's key, once concluded with one.
    pub fn winner(&self) -> Option<&str> {
        self.winner.as_deref()
    }

    /// Whether this run of the test has raised its SRM alert.
    pub fn srm_flagged(&self) -> bool {
        self.srm_flagged
    }

    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.created_at
    }

    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.updated_at
    }

    /// When it was last started.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    fn existing(&self) -> Result<&TestDefinition, TestError> {
        self.definition().ok_or(TestError::NotFound)
    }
}

impl Aggregate for AbTest {
    const TYPE: &'static str = TEST_TYPE;
    type Command = TestCommand;
    type Event = TestEvent;
    type Error = TestError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use TestStatus::*;
        let event = match command {
            TestCommand::Create { definition, at } => {
                if self.definition.is_some() {
                    return Err(TestError::Exists);
                }
                let definition = definition.checked().map_err(TestError::Invalid)?;
                TestEvent::Created { definition, at }
            }
            TestCommand::Update { patch, at } => {
                let current = self.existing()?;
                match self.status {
                    Concluded => return Err(TestError::WrongStatus("concluded")),
                    Running | Stopped if patch.touches_the_plan() => {
                        return Err(TestError::WrongStatus(self.status.as_str()))
                    }
                    _ => {}
                }
                let definition = patch
                    .applied_to(current)
                    .checked()
                    .map_err(TestError::Invalid)?;
                if &definition == current {
                    return Ok(());
                }
                TestEvent::Updated { definition, at }
            }
            TestCommand::Start { at } => {
                self.existing()?;
                match self.status {
                    Running => return Ok(()),
                    Concluded => return Err(TestError::WrongStatus("concluded")),
                    Draft | Stopped => TestEvent::Started { at },
                }
            }
            TestCommand::Stop { at } => {
                self.existing()?;
                match self.status {
                    Stopped => return Ok(()),
                    Running => TestEvent::Stopped { at },
                    Draft | Concluded => return Err(TestError::WrongStatus(self.status.as_str())),
                }
            }
            TestCommand::Delete { at } => {
                self.existing()?;
                match self.status {
                    Running => return Err(TestError::WrongStatus("running")),
                    Draft | Stopped | Concluded => TestEvent::Deleted { at },
                }
            }
            TestCommand::Conclude { winner, reason, at } => {
                let current = self.existing()?;
                match self.status {
                    Running => {}
                    Concluded => return Ok(()),
                    Draft | Stopped => return Err(TestError::WrongStatus(self.status.as_str())),
                }
                if let Some(key) = &winner {
                    if current.variant_index(key).is_none() {
                        return Err(TestError::UnknownWinner);
                    }
                }
                TestEvent::Concluded { winner, reason, at }
            }
            TestCommand::FlagSrm {
                chi2,
                p_value,
                visitors,
                at,
            } => {
                self.existing()?;
                if self.status != Running || self.srm_flagged {
                    return Ok(());
                }
                TestEvent::SrmDetected {
                    chi2,
                    p_value,
                    visitors,
                    at,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TestEvent::Created { definition, at } => {
                self.definition = Some(definition);
                self.status = TestStatus::Draft;
                self.created_at = Some(at);
                self.updated_at = Some(at);
            }
            TestEvent::Updated { definition, at } => {
                self.definition = Some(definition);
                self.updated_at = Some(at);
            }
            TestEvent::Started { at } => {
                self.status = TestStatus::Running;
                self.srm_flagged = false;
                self.started_at = Some(at);
                self.updated_at = Some(at);
            }
            TestEvent::Stopped { at } => {
                self.status = TestStatus::Stopped;
                self.updated_at = Some(at);
            }
            TestEvent::Deleted { at } => {
                self.deleted = true;
                self.updated_at = Some(at);
            }
            TestEvent::Concluded { winner, at, .. } => {
                self.status = TestStatus::Concluded;
                self.winner = winner;
                self.updated_at = Some(at);
            }
            TestEvent::SrmDetected { at, .. } => {
                self.srm_flagged = true;
                self.updated_at = Some(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    fn definition() -> TestDefinition {
        TestDefinition {
            name: " Layouts ".into(),
            surface: Surface::Checkout,
            target: None,
            variants: vec![
                Variant {
                    key: "a".into(),
                    weight: 1,
                    serves: "two_step".into(),
                },
                Variant {
                    key: "b".into(),
                    weight: 1,
                    serves: "one_step".into(),
                },
            ],
            method: Method::Bayesian,
            mde_relative: 0.1,
            power_target: 0.8,
            significance: 0.95,
            baseline_rate: None,
        }
    }

    fn created() -> TestEvent {
        TestEvent::Created {
            definition: TestDefinition {
                name: "Layouts".into(),
                ..definition()
            },
            at: at(),
        }
    }

    #[test]
    fn a_test_is_created_as_a_draft_with_its_name_trimmed() {
        TestFramework::<AbTest>::with(())
            .given_no_previous_events()
            .when(TestCommand::Create {
                definition: definition(),
                at: at(),
            })
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn a_definition_reports_every_problem_at_once() {
        let mut bad = definition();
        bad.name = " ".into();
        bad.variants[1].key = "a".into();
        bad.variants[1].weight = 0;
        bad.variants[0].serves = "Not A Slug".into();
        bad.significance = 1.5;
        bad.baseline_rate = Some(0.0);
        let fields: Vec<String> = match bad.checked() {
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
            Ok(_) => Vec::new(),
        };
        assert_eq!(
            fields,
            [
                "name",
                "variants[0].serves",
                "variants[1].weight",
                "variants[1].key",
                "significance",
                "baseline_rate"
            ]
        );
    }

    #[test]
    fn each_surface_takes_what_its_variants_serve() {
        let cases = [
            (Surface::Checkout, "two_step", true),
            (Surface::Checkout, "holiday-2026", true),
            (Surface::Checkout, "Holiday", false),
            (Surface::Bump, "0190f3a2-7c1e-7d1a-9b1e-3f2a1b0c9d8e", true),
            (Surface::Upsell, "offer id", false),
            (Surface::RecoveryEmail, "cart_nudge_1", true),
            (Surface::RecoverySms, "", false),
        ];
        for (surface, serves, ok) in cases {
            assert_eq!(surface.serves_ok(serves), ok, "{surface:?} {serves:?}");
        }
    }

    #[test]
    fn one_variant_is_not_a_test() {
        let mut one = definition();
        one.variants.truncate(1);
        let errors = one.checked().err().unwrap_or_default();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "variants");
    }

    #[test]
    fn a_running_test_keeps_its_split_but_takes_a_new_name() {
        let started = TestEvent::Started { at: at() };
        TestFramework::<AbTest>::with(())
            .given(vec![created(), started.clone()])
            .when(TestCommand::Update {
                patch: TestPatch {
                    variants: Some(definition().variants),
                    ..TestPatch::default()
                },
                at: at(),
            })
            .then_expect_error(TestError::WrongStatus("running"));
        TestFramework::<AbTest>::with(())
            .given(vec![created(), started])
            .when(TestCommand::Update {
                patch: TestPatch {
                    name: Some("Checkout layouts".into()),
                    ..TestPatch::default()
                },
                at: at(),
            })
            .then_expect_events(vec![TestEvent::Updated {
                definition: TestDefinition {
                    name: "Checkout layouts".into(),
                    ..definition()
                },
                at: at(),
            }]);
    }

    #[test]
    fn a_running_test_is_not_deleted_and_a_concluded_one_not_restarted() {
        TestFramework::<AbTest>::with(())
            .given(vec![created(), TestEvent::Started { at: at() }])
            .when(TestCommand::Delete { at: at() })
            .then_expect_error(TestError::WrongStatus("running"));
        TestFramework::<AbTest>::with(())
            .given(vec![
                created(),
                TestEvent::Started { at: at() },
                TestEvent::Concluded {
                    winner: Some("b".into()),
                    reason: "r".into(),
                    at: at(),
                },
            ])
            .when(TestCommand::Start { at: at() })
            .then_expect_error(TestError::WrongStatus("concluded"));
    }

    #[test]
    fn a_conclusion_names_a_variant_and_happens_once() {
        let running = vec![created(), TestEvent::Started { at: at() }];
        TestFramework::<AbTest>::with(())
            .given(running.clone())
            .when(TestCommand::Conclude {
                winner: Some("c".into()),
                reason: "r".into(),
                at: at(),
            })
            .then_expect_error(TestError::UnknownWinner);
        let concluded = TestEvent::Concluded {
            winner: None,
            reason: "no difference at the planned sample".into(),
            at: at(),
        };
        let mut done = running.clone();
        done.push(concluded.clone());
        TestFramework::<AbTest>::with(())
            .given(running)
            .when(TestCommand::Conclude {
                winner: None,
                reason: "no difference at the planned sample".into(),
                at: at(),
            })
            .then_expect_events(vec![concluded]);
        TestFramework::<AbTest>::with(())
            .given(done)
            .when(TestCommand::Conclude {
                winner: Some("b".into()),
                reason: "r".into(),
                at: at(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_srm_alert_is_raised_once_per_run() {
        let flag = || TestCommand::FlagSrm {
            chi2: 12.0,
            p_value: 0.0005,
            visitors: vec![1000, 860],
            at: at(),
        };
        let alert = TestEvent::SrmDetected {
            chi2: 12.0,
            p_value: 0.0005,
            visitors: vec![1000, 860],
            at: at(),
        };
        let running = vec![created(), TestEvent::Started { at: at() }];
        TestFramework::<AbTest>::with(())
            .given(running.clone())
            .when(flag())
            .then_expect_events(vec![alert.clone()]);
        let mut flagged = running;
        flagged.push(alert.clone());
        TestFramework::<AbTest>::with(())
            .given(flagged.clone())
            .when(flag())
            .then_expect_events(vec![]);
        flagged.push(TestEvent::Stopped { at: at() });
        flagged.push(TestEvent::Started { at: at() });
        TestFramework::<AbTest>::with(())
            .given(flagged)
            .when(flag())
            .then_expect_events(vec![alert]);
    }

    #[test]
    fn a_deleted_test_is_gone() {
        TestFramework::<AbTest>::with(())
            .given(vec![created(), TestEvent::Deleted { at: at() }])
            .when(TestCommand::Start { at: at() })
            .then_expect_error(TestError::NotFound);
    }
}
