//! Reads of the A/B test tables: tests, their per-variant totals (results, bandit posteriors,
//! the conclusion process manager) and assignments (a unit's variant, retention).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::db::Db;
use crate::{fetch_all_db, fetch_optional_db};

/// A test as its table holds it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TestRow {
    pub id: String,
    pub name: String,
    /// checkout, bump, upsell, recovery_email or recovery_sms
    pub surface: String,
    pub target: Option<String>,
    /// frequentist, bayesian or bandit
    pub method: String,
    /// draft, running, stopped or concluded
    pub status: String,
    /// The whole `TestDefinition`, JSON.
    pub definition: String,
    pub winner_variant: Option<String>,
    pub conclusion_reason: Option<String>,
    pub srm_chi2: Option<f64>,
    pub srm_p_value: Option<f64>,
    pub srm_detected_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub concluded_at: Option<DateTime<Utc>>,
    pub last_position: i64,
}

/// One variant's totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct VariantTotalsRow {
    pub test_id: String,
    pub variant: String,
    pub visitors: i64,
    pub conversions: i64,
    pub revenue_minor: i64,
    /// The first currency a conversion's revenue was in (null while none carried one).
    pub currency: Option<String>,
    /// Whether a conversion's revenue was in another currency than `currency`.
    pub mixed_currencies: bool,
}

/// One unit's assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AssignmentRow {
    pub test_id: String,
    pub unit: String,
    pub variant: String,
    pub assigned_at: DateTime<Utc>,
    pub converted: bool,
    pub revenue_minor: i64,
}

const TEST_COLUMNS: &str = "id, name, surface, target, method, status, definition, \
    winner_variant, conclusion_reason, srm_chi2, srm_p_value, srm_detected_at, created_at, \
    updated_at, started_at, concluded_at, last_position";

/// Tests, oldest first; `status` and `surface` keep only those in them.
pub async fn list_tests(
    db: &Db,
    status: Option<&str>,
    surface: Option<&str>,
) -> Result<Vec<TestRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {TEST_COLUMNS} FROM tests WHERE ($1 IS NULL OR status = $1) \
         AND ($2 IS NULL OR surface = $2) ORDER BY created_at, id"
    );
    fetch_all_db!(db, TestRow, &sql, status, surface)
}

/// One test by id.
pub async fn get_test(db: &Db, id: &str) -> Result<Option<TestRow>, sqlx::Error> {
    let sql = format!("SELECT {TEST_COLUMNS} FROM tests WHERE id = $1");
    fetch_optional_db!(db, TestRow, &sql, id)
}

/// The running tests (every surface), by id: what the surfaces hold in memory.
pub async fn running_tests(db: &Db) -> Result<Vec<TestRow>, sqlx::Error> {
    let sql = format!("SELECT {TEST_COLUMNS} FROM tests WHERE status = 'running' ORDER BY id");
    fetch_all_db!(db, TestRow, &sql)
}

/// A test's per-variant totals (variants with no visitor yet have no row).
pub async fn variant_totals(db: &Db, test_id: &str) -> Result<Vec<VariantTotalsRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        VariantTotalsRow,
        "SELECT test_id, variant, visitors, conversions, revenue_minor, currency, \
         mixed_currencies FROM test_variant_totals WHERE test_id = $1 ORDER BY variant",
        test_id
    )
}

/// The per-variant totals of every running test, in one read (the bandits' refresh).
pub async fn running_variant_totals(db: &Db) -> Result<Vec<VariantTotalsRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        VariantTotalsRow,
        "SELECT t.test_id, t.variant, t.visitors, t.conversions, t.revenue_minor, t.currency, \
         t.mixed_currencies FROM test_variant_totals t JOIN tests s ON s.id = t.test_id \
         WHERE s.status = 'running' ORDER BY t.test_id, t.variant"
    )
}

/// One unit's assignment in one test.
pub async fn get_assignment(
    db: &Db,
    test_id: &str,
    unit: &str,
) -> Result<Option<AssignmentRow>, sqlx::Error> {
    fetch_optional_db!(
        db,
        AssignmentRow,
        "SELECT test_id, unit, variant, assigned_at, converted, revenue_minor \
         FROM test_assignments WHERE test_id = $1 AND unit = $2",
        test_id,
        unit
    )
}

/// Up to `limit` assignments made before `before`, oldest first (retention).
pub async fn assignments_before(
    db: &Db,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<AssignmentRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        AssignmentRow,
        "SELECT test_id, unit, variant, assigned_at, converted, revenue_minor \
         FROM test_assignments WHERE assigned_at < $1 ORDER BY assigned_at, test_id, unit \
         LIMIT $2",
        before,
        limit
    )
}

/// One of a unit's assignments with its test's surface and definition (the conversion
/// process manager).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct UnitAssignmentRow {
    pub test_id: String,
    pub variant: String,
    /// The test's surface.
    pub surface: String,
    /// The test's `TestDefinition`, JSON.
    pub definition: String,
}

/// The surfaces that have a test whose assignments may still convert (running, stopped or
/// concluded), each once.
pub async fn tested_surfaces(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = fetch_all_db!(
        db,
        (String,),
        "SELECT DISTINCT surface FROM tests \
         WHERE status IN ('running', 'stopped', 'concluded')"
    )?;
    Ok(rows.into_iter().map(|(s,)| s).collect())
}

/// `unit`'s assignments in the tests that are running, stopped or concluded (a conversion of
/// a unit assigned while the test ran counts after it ends), by test id.
pub async fn unit_assignments(db: &Db, unit: &str) -> Result<Vec<UnitAssignmentRow>, sqlx::Error> {
    fetch_all_db!(
        db,
        UnitAssignmentRow,
        "SELECT a.test_id, a.variant, t.surface, t.definition \
         FROM test_assignments a JOIN tests t ON t.id = a.test_id \
         WHERE a.unit = $1 AND t.status IN ('running', 'stopped', 'concluded') \
         ORDER BY a.test_id",
        unit
    )
}
