-- One-click upsell read tables (issue 11), written by the `upsell_acceptances` projector alone:
-- `upsell_acceptances`, one row per acceptance (one decision of one offer step of one parent
-- order: accepted and charged, or declined by the shopper), and `upsell_refunds`, one row per
-- refund of an acceptance. `refunds_pending` counts the refunds requested and not yet answered
-- by the gateway, so the charger's scan of open acceptances stays on one table. Both are
-- rebuilt from the log.

CREATE TABLE upsell_acceptances (
    acceptance_id    text        PRIMARY KEY,
    offer_id         text        NOT NULL,
    kind             text        NOT NULL, -- upsell, downsell
    funnel_id        text        NOT NULL,
    step             text        NOT NULL,
    parent_order_id  text        NOT NULL,
    status           text        NOT NULL, -- AcceptanceStatus::as_str
    shown_status     text        NOT NULL, -- AcceptanceStatus::shown
    amount           bigint      NOT NULL, -- minor units; 0 for a decline
    currency         text,
    gateway          text,
    charge_ref       text,
    child_order_id   text,
    refunded_amount  bigint      NOT NULL,
    refunds_pending  integer     NOT NULL,
    unknown_attempts integer     NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    last_position    bigint      NOT NULL
);
CREATE INDEX upsell_acceptances_status_updated ON upsell_acceptances (status, updated_at);
CREATE INDEX upsell_acceptances_parent ON upsell_acceptances (parent_order_id);

CREATE TABLE upsell_refunds (
    acceptance_id   text        NOT NULL,
    refund_id       text        NOT NULL,
    amount          bigint      NOT NULL,
    status          text        NOT NULL, -- requested, refunded, failed
    reason          text,
    refund_ref      text,
    store_refund_id text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (acceptance_id, refund_id)
);
