-- One-click upsell read tables (issue 11), written by the `upsell_acceptances` projector alone:
-- `upsell_acceptances`, one row per acceptance (one decision of one offer step of one parent
-- order: accepted and charged, or declined by the shopper), and `upsell_refunds`, one row per
-- refund of an acceptance. `refunds_pending` counts the refunds requested and not yet answered
-- by the gateway, so the charger's scan of open acceptances stays on one table. Both are
-- rebuilt from the log.

CREATE TABLE upsell_acceptances (
    acceptance_id    TEXT        PRIMARY KEY,
    offer_id         TEXT        NOT NULL,
    kind             TEXT        NOT NULL, -- upsell, downsell
    funnel_id        TEXT        NOT NULL,
    step             TEXT        NOT NULL,
    parent_order_id  TEXT        NOT NULL,
    status           TEXT        NOT NULL, -- AcceptanceStatus::as_str
    shown_status     TEXT        NOT NULL, -- AcceptanceStatus::shown
    amount           INTEGER     NOT NULL, -- minor units; 0 for a decline
    currency         TEXT,
    gateway          TEXT,
    charge_ref       TEXT,
    child_order_id   TEXT,
    refunded_amount  INTEGER     NOT NULL,
    refunds_pending  INTEGER     NOT NULL,
    unknown_attempts INTEGER     NOT NULL,
    created_at       TEXT        NOT NULL,
    updated_at       TEXT        NOT NULL,
    last_position    INTEGER     NOT NULL
);
CREATE INDEX upsell_acceptances_status_updated ON upsell_acceptances (status, updated_at);
CREATE INDEX upsell_acceptances_parent ON upsell_acceptances (parent_order_id);

CREATE TABLE upsell_refunds (
    acceptance_id   TEXT        NOT NULL,
    refund_id       TEXT        NOT NULL,
    amount          INTEGER     NOT NULL,
    status          TEXT        NOT NULL, -- requested, refunded, failed
    reason          TEXT,
    refund_ref      TEXT,
    store_refund_id TEXT,
    created_at      TEXT        NOT NULL,
    updated_at      TEXT        NOT NULL,
    PRIMARY KEY (acceptance_id, refund_id)
);
