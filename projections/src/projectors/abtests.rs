use async_trait::async_trait;
use chrono::{DateTime, Utc};
use ocart_domain::abtest::{AssignmentEvent, TestEvent, ASSIGNMENT_TYPE, TEST_TYPE};

use crate::commands::decode_event;
use crate::db::Tx;
use crate::exec_tx;
use crate::runner::Projector;
use crate::store::StoredEvent;

/// Builds `tests` (one row per test, from the `test/*` events of its stream),
/// `test_assignments` (one row per unit assigned and not pruned) and `test_variant_totals`
/// (per test and variant: visitors, conversions, revenue and its currency: the first one a
/// conversion carried, and whether another one came too). A `test/assigned` counts a visitor
/// once (its row is new), a `test/converted` a conversion once (its row was not converted);
/// pruning drops the row and keeps the totals; deleting a test drops all three.
pub struct AbTestsProjector;

#[async_trait]
impl Projector for AbTestsProjector {
    fn name(&self) -> &'static str {
        "abtests"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["tests", "test_assignments", "test_variant_totals"]
    }

    fn indexes(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "tests_surface_status",
                "CREATE INDEX IF NOT EXISTS tests_surface_status ON tests (surface, status)",
            ),
            (
                "test_assignments_assigned_at",
                "CREATE INDEX IF NOT EXISTS test_assignments_assigned_at \
                 ON test_assignments (assigned_at)",
            ),
            (
                "test_assignments_unit",
                "CREATE INDEX IF NOT EXISTS test_assignments_unit ON test_assignments (unit)",
            ),
        ]
    }

    async fn apply(&self, tx: &mut Tx, events: &[StoredEvent]) -> anyhow::Result<()> {
        for event in events {
            if event.aggregate_type == TEST_TYPE {
                test(tx, event).await?;
            } else if event.aggregate_type == ASSIGNMENT_TYPE {
                assignment(tx, event).await?;
            }
        }
        Ok(())
    }
}

async fn test(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    let id = event.aggregate_id.as_str();
    let position = event.global_position;
    match decode_event::<TestEvent>(&event.event_type, &event.payload)? {
        TestEvent::Created { definition, at } => {
            exec_tx!(
                tx,
                "INSERT INTO tests (id, name, surface, target, method, status, definition, \
                 created_at, updated_at, last_position) \
                 VALUES ($1, $2, $3, $4, $5, 'draft', $6, $7, $7, $8) \
                 ON CONFLICT (id) DO NOTHING",
                id,
                &definition.name,
                definition.surface.as_str(),
                definition.target.as_deref(),
                definition.method.as_str(),
                serde_json::to_string(&definition)?,
                at,
                position
            )?;
        }
        TestEvent::Updated { definition, at } => {
            exec_tx!(
                tx,
                "UPDATE tests SET name = $2, target = $3, method = $4, definition = $5, \
                 updated_at = $6, last_position = $7 WHERE id = $1 AND last_position < $7",
                id,
                &definition.name,
                definition.target.as_deref(),
                definition.method.as_str(),
                serde_json::to_string(&definition)?,
                at,
                position
            )?;
        }
        TestEvent::Started { at } => {
            exec_tx!(
                tx,
                "UPDATE tests SET status = 'running', started_at = $2, updated_at = $2, \
                 srm_chi2 = NULL, srm_p_value = NULL, srm_detected_at = NULL, \
                 last_position = $3 WHERE id = $1 AND last_position < $3",
                id,
                at,
                position
            )?;
        }
        TestEvent::Stopped { at } => status(tx, id, "stopped", at, position).await?,
        TestEvent::Deleted { .. } => {
            exec_tx!(tx, "DELETE FROM tests WHERE id = $1", id)?;
            exec_tx!(tx, "DELETE FROM test_assignments WHERE test_id = $1", id)?;
            exec_tx!(tx, "DELETE FROM test_variant_totals WHERE test_id = $1", id)?;
        }
        TestEvent::Concluded { winner, reason, at } => {
            exec_tx!(
                tx,
                "UPDATE tests SET status = 'concluded', winner_variant = $2, \
                 conclusion_reason = $3, concluded_at = $4, updated_at = $4, \
                 last_position = $5 WHERE id = $1 AND last_position < $5",
                id,
                winner.as_deref(),
                &reason,
                at,
                position
            )?;
        }
        TestEvent::SrmDetected {
            chi2, p_value, at, ..
        } => {
            exec_tx!(
                tx,
                "UPDATE tests SET srm_chi2 = $2, srm_p_value = $3, srm_detected_at = $4, \
                 updated_at = $4, last_position = $5 WHERE id = $1 AND last_position < $5",
                id,
                chi2,
                p_value,
                at,
                position
            )?;
        }
    }
    Ok(())
}

async fn status(
    tx: &mut Tx,
    id: &str,
    status: &str,
    at: DateTime<Utc>,
    position: i64,
) -> anyhow::Result<()> {
    exec_tx!(
        tx,
        "UPDATE tests SET status = $2, updated_at = $3, last_position = $4 \
         WHERE id = $1 AND last_position < $4",
        id,
        status,
        at,
        position
    )?;
    Ok(())
}

async fn assignment(tx: &mut Tx, event: &StoredEvent) -> anyhow::Result<()> {
    match decode_event::<AssignmentEvent>(&event.event_type, &event.payload)? {
        AssignmentEvent::Assigned {
            test_id,
            unit,
            variant,
            at,
            ..
        } => {
            let inserted = exec_tx!(
                tx,
                "INSERT INTO test_assignments (test_id, unit, variant, assigned_at, converted, \
                 revenue_minor) VALUES ($1, $2, $3, $4, false, 0) \
                 ON CONFLICT (test_id, unit) DO NOTHING",
                &test_id,
                &unit,
                &variant,
                at
            )?;
            if inserted > 0 {
                exec_tx!(
                    tx,
                    "INSERT INTO test_variant_totals (test_id, variant, visitors, conversions, \
                     revenue_minor) VALUES ($1, $2, 1, 0, 0) ON CONFLICT (test_id, variant) \
                     DO UPDATE SET visitors = test_variant_totals.visitors + 1",
                    &test_id,
                    &variant
                )?;
            }
        }
        AssignmentEvent::Converted {
            test_id,
            unit,
            variant,
            reference,
            revenue_minor,
            currency,
            at,
        } => {
            let currency = currency.map(|c| c.as_str().to_owned());
            let converted = exec_tx!(
                tx,
                "UPDATE test_assignments SET converted = true, converted_at = $3, \
                 revenue_minor = $4, currency = $5, reference = $6 \
                 WHERE test_id = $1 AND unit = $2 AND NOT converted",
                &test_id,
                &unit,
                at,
                revenue_minor,
                currency.as_deref(),
                &reference
            )?;
            if converted > 0 {
                // Saturating: no sum of real revenues comes near i64::MAX, and a projector
                // must never stop on an overflow. The variant keeps the first currency a
                // conversion carried and flags one that carried another (the SET reads the
                // row as it was).
                exec_tx!(
                    tx,
                    "UPDATE test_variant_totals SET conversions = conversions + 1, \
                     revenue_minor = CASE WHEN revenue_minor > 9223372036854775807 - $3 \
                     THEN 9223372036854775807 ELSE revenue_minor + $3 END, \
                     mixed_currencies = (mixed_currencies \
                     OR (currency IS NOT NULL AND $4 IS NOT NULL AND currency <> $4)), \
                     currency = COALESCE(currency, $4) \
                     WHERE test_id = $1 AND variant = $2",
                    &test_id,
                    &variant,
                    revenue_minor,
                    currency.as_deref()
                )?;
            }
        }
        AssignmentEvent::Pruned { test_id, unit, .. } => {
            exec_tx!(
                tx,
                "DELETE FROM test_assignments WHERE test_id = $1 AND unit = $2",
                &test_id,
                &unit
            )?;
        }
    }
    Ok(())
}
