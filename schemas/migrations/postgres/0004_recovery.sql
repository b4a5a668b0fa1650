-- Recovery read tables (issue 3): sequences, runs, the lifecycle of each message, and the
-- suppression list the dispatcher checks before every send. All are rebuilt from the log.

CREATE TABLE recovery_sequences (
    sequence_id   text        PRIMARY KEY,
    name          text        NOT NULL,
    trigger_type  text        NOT NULL,
    steps         jsonb       NOT NULL,
    active        boolean     NOT NULL,
    archived      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    last_position bigint      NOT NULL
);

CREATE TABLE recovery_runs (
    run_id            text        PRIMARY KEY,
    cart_id           text        NOT NULL,
    sequence_id       text        NOT NULL,
    status            text        NOT NULL, -- pending, running, converted, stopped
    stop_reason       text,
    current_step      integer     NOT NULL, -- steps done (sent or given up)
    total_steps       integer     NOT NULL,
    steps             jsonb       NOT NULL, -- the sequence's steps when the run started
    next_due_at       timestamptz,
    claimed_at        timestamptz,
    email_hash        text,
    phone_hash        text,
    abandoned_at      timestamptz NOT NULL,
    started_at        timestamptz NOT NULL,
    last_sent_at      timestamptz,
    updated_at        timestamptz NOT NULL,
    converted_at      timestamptz,
    order_id          text,
    revenue_recovered bigint      NOT NULL DEFAULT 0,
    last_position     bigint      NOT NULL
);
CREATE INDEX recovery_runs_due ON recovery_runs (status, next_due_at);
CREATE INDEX recovery_runs_cart ON recovery_runs (cart_id);
CREATE INDEX recovery_runs_email ON recovery_runs (email_hash);
CREATE INDEX recovery_runs_started ON recovery_runs (started_at, run_id);

-- One row per message: (run, step, attempt). Status: queued, attempted, sent, failed,
-- retry_queued, delivered, canceled.
CREATE TABLE recovery_notifications (
    run_id      text        NOT NULL,
    step        integer     NOT NULL,
    attempt     integer     NOT NULL,
    channel     text        NOT NULL,
    template    text        NOT NULL,
    status      text        NOT NULL,
    message_key text        NOT NULL,
    due_at      timestamptz,
    error       text,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (run_id, step, attempt)
);
CREATE INDEX recovery_notifications_key ON recovery_notifications (message_key);

-- Recipients never messaged: keyed by the recipient's subject hash (email or phone), shared
-- across channels. Reasons: bounce, complaint, unsubscribe, manual, winback_failed.
CREATE TABLE suppression (
    recipient_hash text        PRIMARY KEY,
    channel        text,
    reason         text        NOT NULL,
    source         text,
    created_at     timestamptz NOT NULL,
    last_position  bigint      NOT NULL
);
