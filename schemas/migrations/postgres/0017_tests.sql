-- A/B test read tables (issue 12), written by the `abtests` projector alone: `tests`, one row
-- per test (its definition as JSON, status, winner, the last SRM alert); `test_assignments`, one
-- row per (test, unit) assigned and not pruned (variant, when, whether it converted and its
-- revenue); and `test_variant_totals`, per (test, variant) the visitors, conversions and revenue
-- the results, the bandit's posteriors and the conclusion process manager read in one indexed
-- lookup. Pruning an assignment (`test/assignment_pruned`) drops its row but not what the totals
-- counted. All are rebuilt from the log.

CREATE TABLE tests (
    id                text PRIMARY KEY,
    name              text NOT NULL,
    surface           text NOT NULL, -- checkout, bump, upsell, recovery_email, recovery_sms
    target            text,
    method            text NOT NULL, -- frequentist, bayesian, bandit
    status            text NOT NULL, -- draft, running, stopped, concluded
    definition        text NOT NULL, -- the whole definition, JSON
    winner_variant    text,
    conclusion_reason text,
    srm_chi2          double precision,
    srm_p_value       double precision,
    srm_detected_at   timestamptz,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    started_at        timestamptz,
    concluded_at      timestamptz,
    last_position     bigint NOT NULL
);
CREATE INDEX tests_surface_status ON tests (surface, status);

CREATE TABLE test_assignments (
    test_id       text NOT NULL,
    unit          text NOT NULL,
    variant       text NOT NULL,
    assigned_at   timestamptz NOT NULL,
    converted     boolean NOT NULL,
    converted_at  timestamptz,
    revenue_minor bigint NOT NULL,
    currency      text,
    reference     text,
    PRIMARY KEY (test_id, unit)
);
CREATE INDEX test_assignments_assigned_at ON test_assignments (assigned_at);
CREATE INDEX test_assignments_unit ON test_assignments (unit);

CREATE TABLE test_variant_totals (
    test_id       text NOT NULL,
    variant       text NOT NULL,
    visitors      bigint NOT NULL,
    conversions   bigint NOT NULL,
    revenue_minor bigint NOT NULL,
    PRIMARY KEY (test_id, variant)
);
