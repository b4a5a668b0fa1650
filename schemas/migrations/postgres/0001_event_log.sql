-- The append-only event log, the key vault for sealed personal data, and projection state.
-- Columns follow postgres-es (aggregate_type, aggregate_id, sequence, event_type,
-- event_version, payload, metadata) plus event_id, recorded_at, global_position and
-- transaction_id, which the gap-free global reader orders by.

CREATE TABLE events (
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    sequence        bigint      NOT NULL,
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    event_id        uuid        NOT NULL UNIQUE,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    global_position bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- The global reader's order: (transaction_id, global_position).
CREATE INDEX events_global_order ON events (transaction_id, global_position);

-- Wake readers once per committing statement (notifications are delivered at commit and
-- collapsed within a transaction).
CREATE FUNCTION ocart_events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ocart_events', '');
    RETURN NULL;
END $$;

CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ocart_events_notify();

-- The log is append-only.
CREATE FUNCTION ocart_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the events table is append-only';
END $$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION ocart_events_append_only();

-- One data key per data subject. Deleting the row erases everything sealed with it.
CREATE TABLE key_vault (
    subject    text        PRIMARY KEY,
    key_id     text        NOT NULL UNIQUE,
    data_key   bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Server-wide secrets generated on first start (the HMAC key for subject hashes).
CREATE TABLE server_secrets (
    name       text        PRIMARY KEY,
    value      bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Where each projector, process manager and the relay has read the log to.
CREATE TABLE checkpoints (
    name        text        PRIMARY KEY,
    tx          bigint      NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
