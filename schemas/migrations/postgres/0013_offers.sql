-- Offer read tables (issue 11), written by the `offers` projector alone: `offers`, one row per
-- bump, upsell or downsell (its definition as JSON columns; the active bumps by kind and status
-- are what the checkout's eligibility loads), and `offer_events`, one row per fact the offer
-- reports count (shown, accepted, declined, charged, refunded, revenue). A fact's natural key
-- (`idempotency_key`, e.g. `bump/accepted:{offer}:{cart}`, `revenue:{order}:{offer}`) is unique,
-- so a fact the log states twice (a replayed webhook, a shopper's second click) counts once.
-- Both are rebuilt from the log.

CREATE TABLE offers (
    id            text        PRIMARY KEY,
    kind          text        NOT NULL, -- bump, upsell, downsell
    name          text        NOT NULL,
    status        text        NOT NULL, -- active, archived
    currency      text        NOT NULL,
    product_id    text        NOT NULL,
    product       jsonb       NOT NULL, -- JSON
    pricing       jsonb       NOT NULL, -- JSON, tagged by type
    targeting     jsonb       NOT NULL, -- JSON
    display       jsonb       NOT NULL, -- JSON
    page_template text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    last_position bigint      NOT NULL
);
CREATE INDEX offers_kind_status ON offers (kind, status);

CREATE TABLE offer_events (
    id              bigint      NOT NULL, -- the event's global position
    offer_id        text        NOT NULL,
    kind            text        NOT NULL, -- shown, accepted, declined, charged, refunded, revenue
    cart_id         text,
    order_id        text,
    acceptance_id   text,
    amount          bigint,
    currency        text,
    at              timestamptz NOT NULL,
    idempotency_key text        NOT NULL UNIQUE,
    PRIMARY KEY (id, offer_id) -- one order event may carry the lines of several offers
);
CREATE INDEX offer_events_offer ON offer_events (offer_id, kind);
