-- Read tables of the foundation: carts, audit_log, api_tokens (what auth reads) and the
-- current settings. All are rebuilt from the log by `ocart replay`.

CREATE TABLE carts (
    cart_id           text        PRIMARY KEY,
    session_token     text        NOT NULL UNIQUE, -- sha256 of the session token, never the token
    email             text,
    email_hash        text,
    phone             text,
    phone_hash        text,
    name              text,
    erased            boolean     NOT NULL DEFAULT false,
    status            text        NOT NULL,
    stage             text        NOT NULL,
    abandonment_kind  text,
    source            text        NOT NULL,
    currency          text        NOT NULL,
    items             jsonb       NOT NULL,
    totals            jsonb       NOT NULL,
    total_minor       bigint      NOT NULL,
    consent_text      text,
    consent_at        timestamptz,
    order_id          text,
    revenue_minor     bigint,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    last_activity_at  timestamptz NOT NULL,
    abandoned_at      timestamptz,
    converted_at      timestamptz,
    last_position     bigint      NOT NULL
);
CREATE INDEX carts_status_activity ON carts (status, last_activity_at);
CREATE INDEX carts_updated ON carts (updated_at, cart_id);
CREATE INDEX carts_email_hash ON carts (email_hash);
CREATE INDEX carts_phone_hash ON carts (phone_hash);

CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id    text        NOT NULL UNIQUE,
    actor       text        NOT NULL,
    action      text        NOT NULL,
    object_type text        NOT NULL,
    object_id   text        NOT NULL,
    diff        jsonb       NOT NULL,
    ip          text,
    at          timestamptz NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE TABLE api_tokens (
    token_id     text        PRIMARY KEY,
    name         text        NOT NULL,
    token_hash   text        NOT NULL UNIQUE,
    capabilities jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);

CREATE TABLE settings_current (
    id       text   PRIMARY KEY,
    doc      jsonb  NOT NULL,
    position bigint NOT NULL
);
