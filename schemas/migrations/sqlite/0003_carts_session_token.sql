-- The cart id is derived from the session token (a hash of it), so the primary key already
-- makes session tokens unique, and no read looks carts up by session token. The extra unique
-- index cost every capture and every rebuild a random-order index insert (ADR 0007). SQLite
-- cannot drop a column constraint, so the table is rebuilt.
CREATE TABLE carts_next (
    cart_id           TEXT    PRIMARY KEY,
    session_token     TEXT    NOT NULL, -- sha256 of the session token, never the token
    email             TEXT,
    email_hash        TEXT,
    phone             TEXT,
    phone_hash        TEXT,
    name              TEXT,
    erased            BOOLEAN NOT NULL DEFAULT 0,
    status            TEXT    NOT NULL,
    stage             TEXT    NOT NULL,
    abandonment_kind  TEXT,
    source            TEXT    NOT NULL,
    currency          TEXT    NOT NULL,
    items             TEXT    NOT NULL,
    totals            TEXT    NOT NULL,
    total_minor       INTEGER NOT NULL,
    consent_text      TEXT,
    consent_at        TEXT,
    order_id          TEXT,
    revenue_minor     INTEGER,
    created_at        TEXT    NOT NULL,
    updated_at        TEXT    NOT NULL,
    last_activity_at  TEXT    NOT NULL,
    abandoned_at      TEXT,
    converted_at      TEXT,
    last_position     INTEGER NOT NULL
);
INSERT INTO carts_next SELECT * FROM carts;
DROP TABLE carts;
ALTER TABLE carts_next RENAME TO carts;
CREATE INDEX carts_status_activity ON carts (status, last_activity_at);
CREATE INDEX carts_updated ON carts (updated_at, cart_id);
CREATE INDEX carts_email_hash ON carts (email_hash);
CREATE INDEX carts_phone_hash ON carts (phone_hash);
