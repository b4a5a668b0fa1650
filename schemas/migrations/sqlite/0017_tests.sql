-- A/B test read tables (issue 12), written by the `abtests` projector alone: `tests`, one row
-- per test (its definition as JSON, status, winner, the last SRM alert); `test_assignments`, one
-- row per (test, unit) assigned and not pruned (variant, when, whether it converted and its
-- revenue); and `test_variant_totals`, per (test, variant) the visitors, conversions and revenue
-- the results, the bandit's posteriors and the conclusion process manager read in one indexed
-- lookup. Pruning an assignment (`test/assignment_pruned`) drops its row but not what the totals
-- counted. All are rebuilt from the log.

CREATE TABLE tests (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    surface           TEXT NOT NULL, -- checkout, bump, upsell, recovery_email, recovery_sms
    target            TEXT,
    method            TEXT NOT NULL, -- frequentist, bayesian, bandit
    status            TEXT NOT NULL, -- draft, running, stopped, concluded
    definition        TEXT NOT NULL, -- the whole definition, JSON
    winner_variant    TEXT,
    conclusion_reason TEXT,
    srm_chi2          REAL,
    srm_p_value       REAL,
    srm_detected_at   TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    started_at        TEXT,
    concluded_at      TEXT,
    last_position     INTEGER NOT NULL
);
CREATE INDEX tests_surface_status ON tests (surface, status);

CREATE TABLE test_assignments (
    test_id       TEXT NOT NULL,
    unit          TEXT NOT NULL,
    variant       TEXT NOT NULL,
    assigned_at   TEXT NOT NULL,
    converted     BOOLEAN NOT NULL,
    converted_at  TEXT,
    revenue_minor INTEGER NOT NULL,
    currency      TEXT,
    reference     TEXT,
    PRIMARY KEY (test_id, unit)
);
CREATE INDEX test_assignments_assigned_at ON test_assignments (assigned_at);
CREATE INDEX test_assignments_unit ON test_assignments (unit);

CREATE TABLE test_variant_totals (
    test_id       TEXT NOT NULL,
    variant       TEXT NOT NULL,
    visitors      INTEGER NOT NULL,
    conversions   INTEGER NOT NULL,
    revenue_minor INTEGER NOT NULL,
    PRIMARY KEY (test_id, variant)
);
