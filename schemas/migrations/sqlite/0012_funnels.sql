-- Funnel read tables (issue 11), written by the `funnels` projector alone: `funnels`, one row
-- per funnel (its slug, status, trigger and settings; the active ones by priority are what the
-- checkout's resolve loads), and `funnel_steps`, one row per step (which funnels use an offer).
-- Both are rebuilt from the log.

CREATE TABLE funnels (
    slug          TEXT        PRIMARY KEY,
    name          TEXT        NOT NULL,
    status        TEXT        NOT NULL, -- draft, active, archived
    layout        TEXT        NOT NULL, -- one_step, two_step, three_step
    theme         TEXT        NOT NULL,
    priority      INTEGER     NOT NULL,
    is_default    BOOLEAN     NOT NULL,
    trigger_rules TEXT        NOT NULL, -- the targeting rules, JSON
    step_count    INTEGER     NOT NULL,
    created_at    TEXT        NOT NULL,
    updated_at    TEXT        NOT NULL,
    last_position INTEGER     NOT NULL
);
CREATE INDEX funnels_status_priority ON funnels (status, priority);

CREATE TABLE funnel_steps (
    funnel_id TEXT    NOT NULL,
    step_key  TEXT    NOT NULL,
    position  INTEGER NOT NULL,
    step_type TEXT    NOT NULL, -- checkout, bump, upsell, downsell, thank_you, custom
    offer_id  TEXT,
    branches  TEXT    NOT NULL, -- {"default", "accepted", "declined"}, JSON
    PRIMARY KEY (funnel_id, step_key)
);
CREATE INDEX funnel_steps_offer ON funnel_steps (offer_id);
