-- Funnel read tables (issue 11), written by the `funnels` projector alone: `funnels`, one row
-- per funnel (its slug, status, trigger and settings; the active ones by priority are what the
-- checkout's resolve loads), and `funnel_steps`, one row per step (which funnels use an offer).
-- Both are rebuilt from the log.

CREATE TABLE funnels (
    slug          text        PRIMARY KEY,
    name          text        NOT NULL,
    status        text        NOT NULL, -- draft, active, archived
    layout        text        NOT NULL, -- one_step, two_step, three_step
    theme         text        NOT NULL,
    priority      integer     NOT NULL,
    is_default    boolean     NOT NULL,
    trigger_rules text        NOT NULL, -- the targeting rules, JSON
    step_count    integer     NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    last_position bigint      NOT NULL
);
CREATE INDEX funnels_status_priority ON funnels (status, priority);

CREATE TABLE funnel_steps (
    funnel_id text    NOT NULL,
    step_key  text    NOT NULL,
    position  bigint  NOT NULL,
    step_type text    NOT NULL, -- checkout, bump, upsell, downsell, thank_you, custom
    offer_id  text,
    branches  text    NOT NULL, -- {"default", "accepted", "declined"}, JSON
    PRIMARY KEY (funnel_id, step_key)
);
CREATE INDEX funnel_steps_offer ON funnel_steps (offer_id);
