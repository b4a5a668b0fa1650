-- Offer read tables (issue 11), written by the `offers` projector alone: `offers`, one row per
-- bump, upsell or downsell (its definition as JSON columns; the active bumps by kind and status
-- are what the checkout's eligibility loads), and `offer_events`, one row per fact the offer
-- reports count (shown, accepted, declined, charged, refunded, revenue). A fact's natural key
-- (`idempotency_key`, e.g. `bump/accepted:{offer}:{cart}`, `revenue:{order}:{offer}`) is unique,
-- so a fact the log states twice (a replayed webhook, a shopper's second click) counts once.
-- Both are rebuilt from the log.

CREATE TABLE offers (
    id            TEXT        PRIMARY KEY,
    kind          TEXT        NOT NULL, -- bump, upsell, downsell
    name          TEXT        NOT NULL,
    status        TEXT        NOT NULL, -- active, archived
    currency      TEXT        NOT NULL,
    product_id    TEXT        NOT NULL,
    product       TEXT        NOT NULL, -- JSON
    pricing       TEXT        NOT NULL, -- JSON, tagged by type
    targeting     TEXT        NOT NULL, -- JSON
    display       TEXT        NOT NULL, -- JSON
    page_template TEXT,
    created_at    TEXT        NOT NULL,
    updated_at    TEXT        NOT NULL,
    last_position INTEGER     NOT NULL
);
CREATE INDEX offers_kind_status ON offers (kind, status);

CREATE TABLE offer_events (
    id              INTEGER     NOT NULL, -- the event's global position
    offer_id        TEXT        NOT NULL,
    kind            TEXT        NOT NULL, -- shown, accepted, declined, charged, refunded, revenue
    cart_id         TEXT,
    order_id        TEXT,
    acceptance_id   TEXT,
    amount          INTEGER,
    currency        TEXT,
    at              TEXT        NOT NULL,
    idempotency_key TEXT        NOT NULL UNIQUE,
    PRIMARY KEY (id, offer_id) -- one order event may carry the lines of several offers
);
CREATE INDEX offer_events_offer ON offer_events (offer_id, kind);
