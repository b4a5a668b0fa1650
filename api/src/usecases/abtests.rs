//! A/B tests (issue 12): creating, changing, starting, stopping and deleting them (`/tests`
//! over HTTP, `ocart test` on the command line), reading them back, their results and the
//! sample size they were planned for.
//!
//! A test's id is made here (a UUID v7). An id of any other shape (not 1 to 64 of `A-Z`,
//! `a-z`, `0-9`, `-` and `_`) names no test: it is not found, and never reaches the log or a
//! query (over HTTP, a path that is not UTF-8 once decoded is refused before, as a 422 naming
//! `id`, as on every route). [`start`] refuses a second running test in one place (surface and
//! target). Bodies are checked into the domain's [`TestDefinition`] (which names every field it
//! refuses, `variants[1].serves`), so HTTP and the CLI refuse alike. What a write answers is the
//! aggregate after the command (read your own writes); the fields only the conclusion process
//! manager changes (the conclusion's reason and time, the last SRM alert) come from the read
//! table. Reads come from the read tables.
//!
//! [`results`] computes the statistics with the calculator's own code
//! ([`super::stats::compare`], as `POST /stats/compare` answers them) on the counts of
//! `test_variant_totals` (a variant without a row has no visitor yet), at the test's
//! significance and against its weights, and adds the revenue, the bandit's allocation, the
//! SRM alert against `tests.srm_threshold` and what the conclusion rules
//! ([`ocart_domain::stats::conclude::decide`]) say of the counts now. [`sample_size`] is the
//! calculator's [`super::stats::sample_size`] for the test's plan.

use chrono::{DateTime, SubsecRound, Utc};
use ocart_domain::abtest::{
    self, AbTest, Surface, TestCommand, TestDefinition, TestError, TestPatch, TestStatus, Variant,
    MAX_NAME_LEN, MAX_SERVES_LEN, MAX_TARGET_LEN, MAX_VARIANT_KEY_LEN,
};
use ocart_domain::stats::bayes;
use ocart_domain::stats::conclude::{self, Decision, Method, Plan};
use ocart_domain::FieldError;
use ocart_projections::queries::abtests::{self as q, TestRow};
use ocart_projections::{CommandError, CommandMeta};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::stats::{self as calc, ArmCounts, CalcError, CompareRequest, ComparisonResult};
use super::StoreFailure;
use crate::core::Core;

/// The longest id looked up (a server-made id is a 36-character UUID).
pub const MAX_ID_LEN: usize = 64;

/// One variant, as sent and returned.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TestVariant)]
pub struct VariantBody {
    /// Unique in the test: 1 to 64 of A-Z, a-z, 0-9, - and _.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub key: String,
    /// Its share of the traffic relative to the other variants' weights (1 to 1000000).
    #[serde(deserialize_with = "crate::json::whole")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub weight: u32,
    /// What it serves on the test's surface: on `checkout` a funnel slug or a layout
    /// (`one_step`, `two_step`, `three_step`); on `bump` and `upsell` an offer id; on
    /// `recovery_email` and `recovery_sms` a template name.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,200}$")]
    pub serves: String,
}

impl From<VariantBody> for Variant {
    fn from(v: VariantBody) -> Self {
        Variant {
            key: v.key,
            weight: v.weight,
            serves: v.serves,
        }
    }
}

impl From<&Variant> for VariantBody {
    fn from(v: &Variant) -> Self {
        VariantBody {
            key: v.key.clone(),
            weight: v.weight,
            serves: v.serves.clone(),
        }
    }
}

/// A test to create (`POST /tests`, `ocart test create --file`): a draft until started.
/// `method`, `mde_relative`, `power_target` and `significance` default to the settings
/// `tests.*`.
///
/// Besides what the schema states: variant keys are unique, and each variant serves what its
/// surface serves (on `checkout` a funnel slug, `^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$`, or
/// a layout); each refused with a 422 naming the field.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTest {
    /// 1 to 200 characters, trimmed.
    #[schema(max_length = 200, pattern = "\\S")]
    pub name: String,
    /// checkout, bump, upsell, recovery_email or recovery_sms
    #[schema(value_type = String, pattern = "^(checkout|bump|upsell|recovery_email|recovery_sms)$")]
    pub surface: Surface,
    /// What is tested on the surface: on `checkout` a funnel slug (absent: every cart), on
    /// `bump` and `upsell` the offer whose place the variants take, on recovery the sequence.
    /// 1 to 200 characters, trimmed.
    #[serde(default)]
    #[schema(max_length = 200, pattern = "\\S")]
    pub target: Option<String>,
    /// 2 to 10 variants, the control first.
    #[schema(min_items = 2, max_items = 10)]
    pub variants: Vec<VariantBody>,
    /// frequentist, bayesian or bandit; default `tests.method_default`.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(frequentist|bayesian|bandit)$")]
    pub method: Option<Method>,
    /// The relative change the test is planned to detect (0.1: +10 %), 0.001 to 10; default
    /// `tests.mde_relative`.
    #[serde(default)]
    #[schema(minimum = 0.001, maximum = 10)]
    pub mde_relative: Option<f64>,
    /// The probability of detecting it, 0.5 to 0.999; default `tests.power_target`.
    #[serde(default)]
    #[schema(minimum = 0.5, maximum = 0.999)]
    pub power_target: Option<f64>,
    /// The confidence (1 − α) a winner needs, 0.5 to 0.999; default `tests.significance`.
    #[serde(default)]
    #[schema(minimum = 0.5, maximum = 0.999)]
    pub significance: Option<f64>,
    /// The control's expected rate, strictly between 0 and 1, for the planned sample size;
    /// absent: the control's observed rate.
    #[serde(default)]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub baseline_rate: Option<f64>,
}

/// Changes to a test (`PATCH /tests/{id}`, `ocart test update --file`): what is given
/// replaces what is saved; absent (or null, for the fields that cannot be cleared) keeps it.
/// A running or stopped test takes only a new `name` (anything else is a 409): the split its
/// assignments were made with stays. A concluded test takes no change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = TestPatch)]
pub struct TestPatchBody {
    #[serde(default)]
    #[schema(max_length = 200, pattern = "\\S")]
    pub name: Option<String>,
    /// null clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 200, pattern = "\\S")]
    pub target: Option<Option<String>>,
    #[serde(default)]
    #[schema(min_items = 2, max_items = 10)]
    pub variants: Option<Vec<VariantBody>>,
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = "^(frequentist|bayesian|bandit)$")]
    pub method: Option<Method>,
    #[serde(default)]
    #[schema(minimum = 0.001, maximum = 10)]
    pub mde_relative: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 0.5, maximum = 0.999)]
    pub power_target: Option<f64>,
    #[serde(default)]
    #[schema(minimum = 0.5, maximum = 0.999)]
    pub significance: Option<f64>,
    /// null clears it (the control's observed rate is used).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, exclusive_minimum = 0, exclusive_maximum = 1)]
    pub baseline_rate: Option<Option<f64>>,
}

/// A field that may be set to null: absent is `None`, null `Some(None)`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// The last sample-ratio-mismatch alert (`test/srm_detected`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = TestSrmAlert)]
pub struct SrmAlert {
    #[schema(minimum = 0)]
    pub chi2: f64,
    #[schema(minimum = 0, maximum = 1)]
    pub p_value: f64,
    pub detected_at: DateTime<Utc>,
}

/// A test as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestView {
    pub id: String,
    pub name: String,
    /// checkout, bump, upsell, recovery_email or recovery_sms
    pub surface: String,
    pub target: Option<String>,
    /// The control first.
    pub variants: Vec<VariantBody>,
    /// frequentist, bayesian or bandit
    pub method: String,
    pub mde_relative: f64,
    pub power_target: f64,
    pub significance: f64,
    pub baseline_rate: Option<f64>,
    /// draft, running, stopped or concluded
    pub status: String,
    /// The winning variant's key, once concluded with one.
    pub winner_variant: Option<String>,
    /// Why the test concluded.
    pub conclusion_reason: Option<String>,
    /// The last sample-ratio-mismatch alert, if one was raised.
    pub srm: Option<SrmAlert>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it was last started.
    pub started_at: Option<DateTime<Utc>>,
    pub concluded_at: Option<DateTime<Utc>>,
    /// Global position of the last event written or applied (send as `OCart-Position` to read
    /// it back).
    pub position: Option<i64>,
}

/// One variant's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = TestVariantResult)]
pub struct VariantResult {
    pub key: String,
    pub serves: String,
    #[schema(minimum = 1, maximum = 1000000)]
    pub weight: u32,
    /// Units assigned to it.
    #[schema(value_type = i64, minimum = 0)]
    pub visitors: u64,
    /// Units that converted on the test's surface.
    #[schema(value_type = i64, minimum = 0)]
    pub conversions: u64,
    /// conversions / visitors; null without visitors.
    #[schema(minimum = 0, maximum = 1)]
    pub rate: Option<f64>,
    /// The Wilson score interval of `rate` at the test's significance; null without visitors.
    #[schema(minimum = 0, maximum = 1)]
    pub ci_low: Option<f64>,
    #[schema(minimum = 0, maximum = 1)]
    pub ci_high: Option<f64>,
    /// The conversions' revenue, in minor units of the test's `currency` (with
    /// `mixed_currencies`, a sum of amounts in different currencies).
    pub revenue_minor: i64,
    /// revenue_minor / visitors, in minor units; null without visitors.
    pub revenue_per_visitor: Option<f64>,
    /// P(this variant has the highest rate), Beta(1 + conversions, 1 + visitors − conversions)
    /// posteriors.
    #[schema(minimum = 0, maximum = 1)]
    pub prob_best: f64,
    /// A bandit's Thompson-sampling share of the traffic now (its probability to be best);
    /// null for the other methods.
    #[schema(minimum = 0, maximum = 1)]
    pub allocation: Option<f64>,
}

/// The sample-ratio-mismatch test of the visitors against the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = TestSrm)]
pub struct SrmCheck {
    /// Pearson's chi-square.
    #[schema(minimum = 0)]
    pub chi2: f64,
    /// The number of variants − 1.
    #[schema(value_type = i64, minimum = 1, maximum = 9)]
    pub df: u64,
    #[schema(minimum = 0, maximum = 1)]
    pub p_value: f64,
    /// Whether `p_value` is below the setting `tests.srm_threshold`: the traffic does not
    /// follow the weights.
    pub alert: bool,
}

/// What the conclusion rules say of the counts now (the process manager concludes a running
/// test at the first answer that is not `continue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = TestDecision)]
pub struct DecisionView {
    /// continue, winner or no_difference
    #[schema(pattern = "^(continue|winner|no_difference)$")]
    pub outcome: String,
    /// The winning variant's key with `winner`; null otherwise.
    pub winner_variant: Option<String>,
}

/// A test's results (`GET /tests/{id}/results`, `ocart test results`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestResults {
    pub id: String,
    /// draft, running, stopped or concluded
    pub status: String,
    /// frequentist, bayesian or bandit
    pub method: String,
    /// The confidence level of every interval (the test's significance).
    pub significance: f64,
    /// The winning variant's key, once concluded with one.
    pub winner_variant: Option<String>,
    /// The currency of every variant's revenue: the one ISO 4217 code the conversions'
    /// revenues were in; null while no conversion carried one, and null when they were in
    /// several (`mixed_currencies`).
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: Option<String>,
    /// Whether the conversions' revenues were in more than one currency: then each variant's
    /// `revenue_minor` adds amounts of different currencies, comparable neither with each
    /// other nor between variants, and `currency` is null.
    pub mixed_currencies: bool,
    /// The variants in the test's order, the control first.
    pub variants: Vec<VariantResult>,
    /// Each variant but the control against the control (as `POST /stats/compare` answers).
    pub comparisons: Vec<ComparisonResult>,
    pub srm: SrmCheck,
    pub decision: DecisionView,
}

/// Visitors a test needs (`GET /tests/{id}/sample-size`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TestSampleSize {
    /// Visitors needed in each variant (Fleiss, no continuity correction).
    #[schema(value_type = i64, minimum = 1)]
    pub per_variant: u64,
    /// `per_variant` × the number of variants.
    #[schema(value_type = i64, minimum = 2)]
    pub total: u64,
    /// The control's rate the size is for.
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub baseline_rate: f64,
    /// plan (the test's `baseline_rate`) or observed (the control's rate so far)
    #[schema(pattern = "^(plan|observed)$")]
    pub baseline_from: String,
    pub mde_relative: f64,
    pub power: f64,
    pub significance: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TestsError {
    #[error("the request has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("test {0}")]
    NotFound(String),
    /// The command does not apply in the test's status (the message says why).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreFailure),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

super::database_errors!(TestsError);

/// What a command was doing, for the message of a refusal in the test's status.
#[derive(Debug, Clone, Copy)]
enum Action {
    Create,
    Update,
    Start,
    Stop,
    Delete,
}

impl TestsError {
    fn of_command(id: &str, action: Action, err: CommandError<TestError>) -> Self {
        match StoreFailure::split(err) {
            Ok(failure) => Self::Store(failure),
            Err(TestError::Invalid(errors)) => Self::Invalid(errors),
            Err(TestError::NotFound) => Self::NotFound(id.to_owned()),
            Err(TestError::Exists) => Self::Conflict(format!("a test with the id {id} exists")),
            Err(TestError::WrongStatus(status)) => Self::Conflict(wrong_status(action, status)),
            Err(other @ TestError::UnknownWinner) => Self::Conflict(other.to_string()),
        }
    }
}

/// Why `action` does not apply to a test in `status`.
fn wrong_status(action: Action, status: &str) -> String {
    match (action, status) {
        (_, "concluded") => "the test is concluded: it takes no change and cannot run again; \
                             create a new test"
            .to_owned(),
        (Action::Update, _) => format!(
            "the test is {status}: once started a test keeps its plan (target, variants, \
             method, mde_relative, power_target, significance, baseline_rate); only its name \
             can change"
        ),
        (Action::Stop, _) => format!("the test is {status}: only a running test is stopped"),
        (Action::Delete, _) => format!("the test is {status}: stop it before deleting it"),
        (Action::Create | Action::Start, _) => format!("the test is {status}"),
    }
}

/// Whether `id` has the shape of a test id (anything else names no test).
fn id_shape(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn known_id(id: &str) -> Result<(), TestsError> {
    if id_shape(id) {
        Ok(())
    } else {
        Err(TestsError::NotFound(id.to_owned()))
    }
}

/// The checks the domain's trimming would hide: the document states keys and `serves` without
/// surrounding spaces and names, targets at most 200 characters as sent.
fn check_as_sent(
    name: Option<&str>,
    target: Option<&str>,
    variants: Option<&[VariantBody]>,
) -> Result<(), TestsError> {
    let mut errors = Vec::new();
    if name.is_some_and(|n| n.chars().count() > MAX_NAME_LEN) {
        errors.push(FieldError::new(
            "name",
            format!("at most {MAX_NAME_LEN} characters"),
        ));
    }
    if target.is_some_and(|t| t.chars().count() > MAX_TARGET_LEN) {
        errors.push(FieldError::new(
            "target",
            format!("must be 1 to {MAX_TARGET_LEN} characters"),
        ));
    }
    for (i, v) in variants.unwrap_or_default().iter().enumerate() {
        if v.key.trim() != v.key {
            errors.push(FieldError::new(
                format!("variants[{i}].key"),
                format!("must be 1 to {MAX_VARIANT_KEY_LEN} of A-Z, a-z, 0-9, - and _"),
            ));
        }
        if v.serves.trim() != v.serves {
            errors.push(FieldError::new(
                format!("variants[{i}].serves"),
                format!("must be 1 to {MAX_SERVES_LEN} of A-Z, a-z, 0-9, -, _ and ., no spaces"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TestsError::Invalid(errors))
    }
}

fn stored_definition(id: &str, raw: &str) -> Result<TestDefinition, TestsError> {
    serde_json::from_str(raw)
        .map_err(|e| TestsError::Internal(anyhow::anyhow!("stored definition of test {id}: {e}")))
}

fn srm_of_row(row: &TestRow) -> Option<SrmAlert> {
    match (row.srm_chi2, row.srm_p_value, row.srm_detected_at) {
        (Some(chi2), Some(p_value), Some(detected_at)) => Some(SrmAlert {
            chi2,
            p_value,
            detected_at,
        }),
        _ => None,
    }
}

/// The view's definition fields, and the rest as given.
#[allow(clippy::too_many_arguments)]
fn view(
    id: &str,
    definition: &TestDefinition,
    status: String,
    winner_variant: Option<String>,
    row: Option<&TestRow>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    position: Option<i64>,
) -> TestView {
    // To the microsecond, as the read tables hold times: a write answers what a read shows.
    let micros = |at: DateTime<Utc>| at.trunc_subsecs(6);
    TestView {
        id: id.to_owned(),
        name: definition.name.clone(),
        surface: definition.surface.as_str().to_owned(),
        target: definition.target.clone(),
        variants: definition.variants.iter().map(VariantBody::from).collect(),
        method: definition.method.as_str().to_owned(),
        mde_relative: definition.mde_relative,
        power_target: definition.power_target,
        significance: definition.significance,
        baseline_rate: definition.baseline_rate,
        status,
        winner_variant,
        conclusion_reason: row.and_then(|r| r.conclusion_reason.clone()),
        srm: row.and_then(srm_of_row).map(|srm| SrmAlert {
            detected_at: micros(srm.detected_at),
            ..srm
        }),
        created_at: micros(created_at),
        updated_at: micros(updated_at),
        started_at: started_at.map(micros),
        concluded_at: row.and_then(|r| r.concluded_at).map(micros),
        position,
    }
}

fn view_of_row(row: &TestRow) -> Result<TestView, TestsError> {
    let definition = stored_definition(&row.id, &row.definition)?;
    Ok(view(
        &row.id,
        &definition,
        row.status.clone(),
        row.winner_variant.clone(),
        Some(row),
        row.created_at,
        row.updated_at,
        row.started_at,
        Some(row.last_position),
    ))
}

/// The test as the aggregate now holds it; the fields only the process manager's events
/// change (conclusion, SRM alert) as the read table has them.
fn view_of_aggregate(
    id: &str,
    test: &AbTest,
    row: Option<&TestRow>,
    position: Option<i64>,
) -> Result<TestView, TestsError> {
    let definition = test
        .definition()
        .ok_or_else(|| TestsError::NotFound(id.to_owned()))?;
    let updated_at = test.updated_at().unwrap_or_default();
    Ok(view(
        id,
        definition,
        test.status().as_str().to_owned(),
        test.winner().map(str::to_owned),
        row,
        test.created_at().unwrap_or(updated_at),
        updated_at,
        test.started_at(),
        position,
    ))
}

/// Runs `command` on test `id` and answers the test as it now is.
async fn run(
    core: &Core,
    id: &str,
    action: Action,
    command: TestCommand,
    meta: &CommandMeta,
) -> Result<TestView, TestsError> {
    known_id(id)?;
    let outcome = core
        .tests
        .execute(id, command, meta)
        .await
        .map_err(|e| TestsError::of_command(id, action, e))?;
    let row = q::get_test(&core.db, id).await?;
    view_of_aggregate(
        id,
        &outcome.aggregate,
        row.as_ref(),
        outcome.last_position(),
    )
}

/// Creates a test, a draft, under a new id; the plan's absent fields from the settings
/// `tests.*`.
pub async fn create(
    core: &Core,
    input: NewTest,
    meta: &CommandMeta,
) -> Result<TestView, TestsError> {
    check_as_sent(
        Some(&input.name),
        input.target.as_deref(),
        Some(&input.variants),
    )?;
    let defaults = core.settings().await?.tests;
    let method = match input.method {
        Some(method) => method,
        None => Method::parse(&defaults.method_default).ok_or_else(|| {
            anyhow::anyhow!(
                "the setting tests.method_default ({:?}) is not a method",
                defaults.method_default
            )
        })?,
    };
    let definition = TestDefinition {
        name: input.name,
        surface: input.surface,
        target: input.target,
        variants: input.variants.into_iter().map(Into::into).collect(),
        method,
        mde_relative: input.mde_relative.unwrap_or(defaults.mde_relative),
        power_target: input.power_target.unwrap_or(defaults.power_target),
        significance: input.significance.unwrap_or(defaults.significance),
        baseline_rate: input.baseline_rate,
    };
    let id = Uuid::now_v7().to_string();
    let command = TestCommand::Create {
        definition,
        at: meta.at,
    };
    run(core, &id, Action::Create, command, meta).await
}

/// Changes what `patch` gives (a running or stopped test only its name).
pub async fn update(
    core: &Core,
    id: &str,
    patch: TestPatchBody,
    meta: &CommandMeta,
) -> Result<TestView, TestsError> {
    known_id(id)?;
    check_as_sent(
        patch.name.as_deref(),
        patch.target.as_ref().and_then(|t| t.as_deref()),
        patch.variants.as_deref(),
    )?;
    let patch = TestPatch {
        name: patch.name,
        target: patch.target,
        variants: patch
            .variants
            .map(|vs| vs.into_iter().map(Into::into).collect()),
        method: patch.method,
        mde_relative: patch.mde_relative,
        power_target: patch.power_target,
        significance: patch.significance,
        baseline_rate: patch.baseline_rate,
    };
    let command = TestCommand::Update { patch, at: meta.at };
    run(core, id, Action::Update, command, meta).await
}

/// The place of [`abtest::place`] in words, for a refusal.
fn place_words(definition: &TestDefinition) -> String {
    let surface = definition.surface.as_str();
    match (definition.surface, definition.target.as_deref()) {
        (Surface::Checkout, Some(funnel)) => format!("{surface} of funnel {funnel}"),
        (Surface::Checkout, None) => format!("{surface} of every cart (no target)"),
        (_, Some(offer)) => format!("{surface} of offer {offer}"),
        (_, None) => format!(
            "{surface} of offer {} (no target; the control's offer)",
            definition
                .variants
                .first()
                .map(|c| c.serves.as_str())
                .unwrap_or_default()
        ),
    }
}

/// Refuses to start test `id` (`definition`) while another test runs in its [`abtest::place`]: which
/// of two would apply there is not the user's choice to leave to the id order. The running
/// tests are read from the read table (each confirmed running on its own stream); two starts
/// at the same instant can both pass, and then the first by id (the earlier created) applies
/// there and the other gets no traffic (`choose`).
async fn refuse_a_second(
    core: &Core,
    id: &str,
    definition: &TestDefinition,
) -> Result<(), TestsError> {
    let Some(mine) = abtest::place(definition) else {
        return Ok(());
    };
    for other in q::running_tests(&core.db).await? {
        if other.id == id {
            continue;
        }
        let theirs = stored_definition(&other.id, &other.definition)?;
        if abtest::place(&theirs) != Some(mine) {
            continue;
        }
        let (aggregate, _, _) = core
            .tests
            .load(&other.id)
            .await
            .map_err(|e| TestsError::of_command(&other.id, Action::Start, e))?;
        if aggregate.status() == TestStatus::Running {
            return Err(TestsError::Conflict(format!(
                "test {} ({:?}) is running on the {}: one test runs in a place at a time; \
                 stop it before starting this one",
                other.id,
                theirs.name,
                place_words(definition)
            )));
        }
    }
    Ok(())
}

/// Starts a draft or stopped test (a running one stays so; a concluded one is refused; one
/// whose place another running test holds is refused, [`refuse_a_second`]).
pub async fn start(core: &Core, id: &str, meta: &CommandMeta) -> Result<TestView, TestsError> {
    known_id(id)?;
    let (test, _, _) = core
        .tests
        .load(id)
        .await
        .map_err(|e| TestsError::of_command(id, Action::Start, e))?;
    if let Some(definition) = test.definition() {
        if matches!(test.status(), TestStatus::Draft | TestStatus::Stopped) {
            refuse_a_second(core, id, definition).await?;
        }
    }
    run(
        core,
        id,
        Action::Start,
        TestCommand::Start { at: meta.at },
        meta,
    )
    .await
}

/// Stops a running test (a stopped one stays so; a draft or concluded one is refused).
pub async fn stop(core: &Core, id: &str, meta: &CommandMeta) -> Result<TestView, TestsError> {
    run(
        core,
        id,
        Action::Stop,
        TestCommand::Stop { at: meta.at },
        meta,
    )
    .await
}

/// Deletes a test that is not running, with its assignments and totals; answers the position
/// of the deletion (`None` if nothing was written).
pub async fn delete(core: &Core, id: &str, meta: &CommandMeta) -> Result<Option<i64>, TestsError> {
    known_id(id)?;
    let outcome = core
        .tests
        .execute(id, TestCommand::Delete { at: meta.at }, meta)
        .await
        .map_err(|e| TestsError::of_command(id, Action::Delete, e))?;
    Ok(outcome.last_position())
}

/// The tests (in `status`, on `surface`, if given), oldest first, from the read tables.
pub async fn list(
    core: &Core,
    status: Option<&str>,
    surface: Option<&str>,
) -> Result<Vec<TestView>, TestsError> {
    let mut errors = Vec::new();
    let statuses = [
        TestStatus::Draft,
        TestStatus::Running,
        TestStatus::Stopped,
        TestStatus::Concluded,
    ];
    if status.is_some_and(|s| !statuses.iter().any(|t| t.as_str() == s)) {
        errors.push(FieldError::new(
            "status",
            "must be draft, running, stopped or concluded",
        ));
    }
    if surface.is_some_and(|s| Surface::parse(s).is_none()) {
        errors.push(FieldError::new(
            "surface",
            "must be checkout, bump, upsell, recovery_email or recovery_sms",
        ));
    }
    if !errors.is_empty() {
        return Err(TestsError::Invalid(errors));
    }
    q::list_tests(&core.db, status, surface)
        .await?
        .iter()
        .map(view_of_row)
        .collect()
}

/// One test, from the read tables.
pub async fn show(core: &Core, id: &str) -> Result<TestView, TestsError> {
    view_of_row(&row(core, id).await?)
}

async fn row(core: &Core, id: &str) -> Result<TestRow, TestsError> {
    known_id(id)?;
    q::get_test(&core.db, id)
        .await?
        .ok_or_else(|| TestsError::NotFound(id.to_owned()))
}

/// One variant's totals: (visitors, conversions, revenue in minor units).
type Totals = (u64, u64, i64);

/// The currency of the revenue in `rows`: (the one every conversion that carried a currency
/// was in, `None` if none did; whether they were in several, when the currency is `None`).
fn revenue_currency(rows: &[q::VariantTotalsRow]) -> (Option<String>, bool) {
    let mut seen: Option<&str> = None;
    for r in rows {
        if r.mixed_currencies {
            return (None, true);
        }
        match (seen, r.currency.as_deref()) {
            (Some(a), Some(b)) if a != b => return (None, true),
            (None, Some(b)) => seen = Some(b),
            _ => {}
        }
    }
    (seen.map(str::to_owned), false)
}

/// A test's read rows: its row, definition, each variant's totals and the revenue's currency.
type Counts = (TestRow, TestDefinition, Vec<Totals>, (Option<String>, bool));

/// The test's definition, each variant's totals in the definition's order (a variant
/// without a row has none yet) and the revenue's currency ([`revenue_currency`]).
async fn counts(core: &Core, id: &str) -> Result<Counts, TestsError> {
    let row = row(core, id).await?;
    let definition = stored_definition(id, &row.definition)?;
    let rows = q::variant_totals(&core.db, id).await?;
    let currency = revenue_currency(&rows);
    let count = |n: i64, what: &str| {
        u64::try_from(n).map_err(|_| anyhow::anyhow!("test {id}: a negative {what} total ({n})"))
    };
    let mut totals = Vec::with_capacity(definition.variants.len());
    for v in &definition.variants {
        match rows.iter().find(|r| r.variant == v.key) {
            Some(r) => totals.push((
                count(r.visitors, "visitors")?,
                count(r.conversions, "conversions")?,
                r.revenue_minor,
            )),
            None => totals.push((0, 0, 0)),
        }
    }
    Ok((row, definition, totals, currency))
}

/// The test's results now: per variant its counts, rate with the Wilson interval, revenue,
/// probability to be best and (bandits) allocation; each variant against the control; the
/// SRM test and its alert; what the conclusion rules say. A test without visitors answers
/// zeros and nulls. The revenue's currency is the one the conversions were in, or null and
/// `mixed_currencies` when they were in several: revenues are never converted.
pub async fn results(core: &Core, id: &str) -> Result<TestResults, TestsError> {
    let (row, definition, totals, (currency, mixed_currencies)) = counts(core, id).await?;
    let srm_threshold = core.settings().await?.tests.srm_threshold;
    let request = CompareRequest {
        arms: definition
            .variants
            .iter()
            .zip(&totals)
            .map(|(v, &(visitors, conversions, _))| ArmCounts {
                key: v.key.clone(),
                conversions,
                visitors,
            })
            .collect(),
        confidence: Some(definition.significance),
        weights: Some(
            definition
                .variants
                .iter()
                .map(|v| f64::from(v.weight))
                .collect(),
        ),
    };
    let answer = calc::compare(&request).map_err(|e| internal_calc(id, e))?;
    let arms: Vec<bayes::Arm> = totals
        .iter()
        .map(|&(visitors, conversions, _)| bayes::Arm {
            conversions,
            visitors,
        })
        .collect();
    let plan = Plan {
        significance: definition.significance,
        power: definition.power_target,
        mde_relative: definition.mde_relative,
        baseline_rate: definition.baseline_rate,
    };
    let decision = conclude::decide(definition.method, &plan, &arms)
        .map_err(|e| anyhow::anyhow!("the conclusion rules refused test {id}: {e}"))?;
    let bandit = definition.method == Method::Bandit;
    let variants = definition
        .variants
        .iter()
        .zip(&totals)
        .zip(&answer.arms)
        .map(|((v, &(visitors, _, revenue_minor)), arm)| VariantResult {
            key: v.key.clone(),
            serves: v.serves.clone(),
            weight: v.weight,
            visitors,
            conversions: arm.conversions,
            rate: arm.rate,
            ci_low: arm.ci_low,
            ci_high: arm.ci_high,
            revenue_minor,
            revenue_per_visitor: (visitors > 0).then(|| revenue_minor as f64 / visitors as f64),
            prob_best: arm.prob_best,
            allocation: bandit.then_some(arm.prob_best),
        })
        .collect();
    let decision = match decision {
        Decision::Continue => DecisionView {
            outcome: "continue".into(),
            winner_variant: None,
        },
        Decision::NoDifference => DecisionView {
            outcome: "no_difference".into(),
            winner_variant: None,
        },
        Decision::Winner { arm } => DecisionView {
            outcome: "winner".into(),
            winner_variant: Some(
                definition
                    .variants
                    .get(arm)
                    .map(|v| v.key.clone())
                    .ok_or_else(|| anyhow::anyhow!("test {id}: the winner is arm {arm}"))?,
            ),
        },
    };
    Ok(TestResults {
        id: row.id,
        status: row.status,
        method: definition.method.as_str().to_owned(),
        significance: definition.significance,
        winner_variant: row.winner_variant,
        currency,
        mixed_currencies,
        variants,
        comparisons: answer.comparisons,
        srm: SrmCheck {
            chi2: answer.srm.chi2,
            df: answer.srm.df,
            p_value: answer.srm.p_value,
            alert: answer.srm.p_value < srm_threshold,
        },
        decision,
    })
}

fn internal_calc(id: &str, err: CalcError) -> TestsError {
    TestsError::Internal(anyhow::anyhow!(
        "the statistics refused the counts of test {id}: {err}"
    ))
}

/// The visitors the test needs per variant for its plan: the test's `baseline_rate`, else the
/// control's observed rate once it has converted (else refused: there is no baseline yet).
pub async fn sample_size(core: &Core, id: &str) -> Result<TestSampleSize, TestsError> {
    let (_, definition, totals, _) = counts(core, id).await?;
    let (baseline_rate, baseline_from) = match (definition.baseline_rate, totals.first()) {
        (Some(rate), _) => (rate, "plan"),
        (None, Some(&(visitors, conversions, _))) if conversions > 0 => {
            (conversions as f64 / visitors as f64, "observed")
        }
        _ => {
            return Err(TestsError::Invalid(vec![FieldError::new(
                "baseline_rate",
                "no baseline yet: set baseline_rate or wait for the control's first conversion",
            )]))
        }
    };
    let variants = u32::try_from(definition.variants.len())
        .map_err(|_| anyhow::anyhow!("test {id}: too many variants"))?;
    let request = calc::SampleSizeRequest {
        baseline_rate,
        relative_mde: definition.mde_relative,
        power: Some(definition.power_target),
        confidence: Some(definition.significance),
        variants: Some(variants),
    };
    let answer = calc::sample_size(&request).map_err(|CalcError::Invalid(errors)| {
        // The calculator's parameters under the test's names.
        TestsError::Invalid(
            errors
                .into_iter()
                .map(|e| {
                    let field = match e.field.as_str() {
                        "relative_mde" => "mde_relative",
                        "power" => "power_target",
                        "confidence" => "significance",
                        other => other,
                    };
                    FieldError::new(field, e.message)
                })
                .collect(),
        )
    })?;
    Ok(TestSampleSize {
        per_variant: answer.per_variant,
        total: answer.total,
        baseline_rate,
        baseline_from: baseline_from.to_owned(),
        mde_relative: definition.mde_relative,
        power: definition.power_target,
        significance: definition.significance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ids_of_the_server_made_shape_are_looked_up() {
        let made = Uuid::now_v7().to_string();
        for (id, looked_up) in [
            (made.as_str(), true),
            ("legacy_id-1", true),
            ("", false),
            ("a/b", false),
            ("nul\0", false),
            ("é", false),
            (&"x".repeat(65), false),
        ] {
            assert_eq!(id_shape(id), looked_up, "{id:?}");
        }
    }

    #[test]
    fn a_patch_tells_absent_from_null() {
        let patch: TestPatchBody =
            serde_json::from_str(r#"{"baseline_rate": null, "name": "n"}"#).unwrap();
        assert_eq!(patch.baseline_rate, Some(None));
        assert_eq!(patch.target, None);
        let patch: TestPatchBody = serde_json::from_str(r#"{"target": "t"}"#).unwrap();
        assert_eq!(patch.target, Some(Some("t".into())));
    }

    #[test]
    fn refusals_in_a_status_say_what_to_do() {
        let running = wrong_status(Action::Update, "running");
        assert!(
            running.contains("running") && running.contains("name"),
            "{running}"
        );
        assert!(wrong_status(Action::Delete, "running").contains("stop it"));
    }
}
