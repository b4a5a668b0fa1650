-- Funnel report tables (issue 11, section 5), written by the `funnel_reports` projector alone:
-- `funnel_report_steps`, the projector's own copy of every funnel's steps (`is_current` false for
-- a step a later definition dropped; bump steps map a `bump/shown` to its funnels);
-- `funnel_report_facts`, one row per fact a step counts (visit, accepted, declined, revenue, refunded;
-- `before_charge` links an acceptance to its step), unique by its natural key, so a fact the
-- log states twice counts once; and `funnel_report_orders`, one row per order that could
-- belong to a funnel (it carried an offer line or a saved payment), attributed to the first
-- funnel that touched it (a bump step's offer line, an upsell step shown or decided for it).
-- All are rebuilt from the log.

CREATE TABLE funnel_report_steps (
    funnel_id     text    NOT NULL,
    step_key      text    NOT NULL,
    position      bigint  NOT NULL,
    step_type     text    NOT NULL, -- checkout, bump, upsell, downsell, thank_you, custom
    offer_id      text,
    is_current    boolean NOT NULL,
    last_position bigint  NOT NULL,
    PRIMARY KEY (funnel_id, step_key)
);
CREATE INDEX funnel_report_steps_offer ON funnel_report_steps (offer_id);

CREATE TABLE funnel_report_facts (
    id              bigint      NOT NULL, -- the event's global position
    funnel_id       text        NOT NULL,
    step_key        text        NOT NULL,
    kind            text        NOT NULL, -- visit, accepted, declined, revenue, refunded, before_charge
    order_id        text,
    acceptance_id   text,
    amount          bigint,
    currency        text,
    at              timestamptz NOT NULL,
    idempotency_key text        PRIMARY KEY -- the fact's natural key
);
CREATE INDEX funnel_report_facts_acceptance ON funnel_report_facts (acceptance_id);
CREATE INDEX funnel_report_facts_funnel ON funnel_report_facts (funnel_id, step_key, kind);

CREATE TABLE funnel_report_orders (
    order_id      text        PRIMARY KEY,
    funnel_id     text, -- null until a funnel touches the order
    currency      text        NOT NULL,
    total         bigint      NOT NULL, -- the order's total, minor units
    paid          boolean     NOT NULL,
    bump          boolean     NOT NULL, -- it carried a line of one of the funnel's bumps
    upsell_total  bigint      NOT NULL, -- accepted upsells and downsells of the funnel
    placed_at     timestamptz NOT NULL,
    last_position bigint      NOT NULL
);
CREATE INDEX funnel_report_orders_funnel ON funnel_report_orders (funnel_id);
