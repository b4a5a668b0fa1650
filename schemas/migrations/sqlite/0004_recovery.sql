-- Recovery read tables (issue 3): sequences, runs, the lifecycle of each message, and the
-- suppression list the dispatcher checks before every send. All are rebuilt from the log.

CREATE TABLE recovery_sequences (
    sequence_id   TEXT        PRIMARY KEY,
    name          TEXT        NOT NULL,
    trigger_type  TEXT        NOT NULL,
    steps         TEXT        NOT NULL,
    active        BOOLEAN     NOT NULL,
    archived      BOOLEAN     NOT NULL DEFAULT 0,
    created_at    TEXT        NOT NULL,
    updated_at    TEXT        NOT NULL,
    last_position INTEGER     NOT NULL
);

CREATE TABLE recovery_runs (
    run_id            TEXT        PRIMARY KEY,
    cart_id           TEXT        NOT NULL,
    sequence_id       TEXT        NOT NULL,
    status            TEXT        NOT NULL, -- pending, running, converted, stopped
    stop_reason       TEXT,
    current_step      INTEGER     NOT NULL, -- steps done (sent or given up)
    total_steps       INTEGER     NOT NULL,
    steps             TEXT        NOT NULL, -- the sequence's steps when the run started
    next_due_at       TEXT,
    claimed_at        TEXT,
    email_hash        TEXT,
    phone_hash        TEXT,
    abandoned_at      TEXT        NOT NULL,
    started_at        TEXT        NOT NULL,
    last_sent_at      TEXT,
    updated_at        TEXT        NOT NULL,
    converted_at      TEXT,
    order_id          TEXT,
    revenue_recovered INTEGER     NOT NULL DEFAULT 0,
    last_position     INTEGER     NOT NULL
);
CREATE INDEX recovery_runs_due ON recovery_runs (status, next_due_at);
CREATE INDEX recovery_runs_cart ON recovery_runs (cart_id);
CREATE INDEX recovery_runs_email ON recovery_runs (email_hash);
CREATE INDEX recovery_runs_started ON recovery_runs (started_at, run_id);

-- One row per message: (run, step, attempt). Status: queued, attempted, sent, failed,
-- retry_queued, delivered, canceled.
CREATE TABLE recovery_notifications (
    run_id      TEXT        NOT NULL,
    step        INTEGER     NOT NULL,
    attempt     INTEGER     NOT NULL,
    channel     TEXT        NOT NULL,
    template    TEXT        NOT NULL,
    status      TEXT        NOT NULL,
    message_key TEXT        NOT NULL,
    due_at      TEXT,
    error       TEXT,
    updated_at  TEXT        NOT NULL,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE INDEX recovery_notifications_key ON recovery_notifications (message_key);

-- Recipients never messaged: keyed by the recipient's subject hash (email or phone), shared
-- across channels. Reasons: bounce, complaint, unsubscribe, manual, winback_failed.
CREATE TABLE suppression (
    recipient_hash TEXT        PRIMARY KEY,
    channel        TEXT,
    reason         TEXT        NOT NULL,
    source         TEXT,
    created_at     TEXT        NOT NULL,
    last_position  INTEGER     NOT NULL
);
