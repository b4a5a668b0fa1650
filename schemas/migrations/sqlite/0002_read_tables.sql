-- Read tables of the foundation: carts, audit_log, api_tokens (what auth reads) and the
-- current settings. All are rebuilt from the log by `ocart replay`.

CREATE TABLE carts (
    cart_id           TEXT    PRIMARY KEY,
    session_token     TEXT    NOT NULL UNIQUE, -- sha256 of the session token, never the token
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
CREATE INDEX carts_status_activity ON carts (status, last_activity_at);
CREATE INDEX carts_updated ON carts (updated_at, cart_id);
CREATE INDEX carts_email_hash ON carts (email_hash);
CREATE INDEX carts_phone_hash ON carts (phone_hash);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT    NOT NULL UNIQUE,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    object_type TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    diff        TEXT    NOT NULL,
    ip          TEXT,
    at          TEXT    NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE api_tokens (
    token_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    token_hash   TEXT NOT NULL UNIQUE,
    capabilities TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
);

CREATE TABLE settings_current (
    id       TEXT    PRIMARY KEY,
    doc      TEXT    NOT NULL,
    position INTEGER NOT NULL
);
