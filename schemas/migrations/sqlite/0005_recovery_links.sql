-- The links a recovery message carries (restore, unsubscribe), by the sha256 of their token;
-- the tokens themselves are never stored. Rebuilt from `recovery/dispatched` events.
CREATE TABLE recovery_links (
    token_hash     TEXT        PRIMARY KEY,
    purpose        TEXT        NOT NULL, -- restore or unsubscribe
    run_id         TEXT        NOT NULL,
    message_key    TEXT        NOT NULL,
    cart_id        TEXT        NOT NULL,
    channel        TEXT        NOT NULL,
    recipient_hash TEXT,
    created_at     TEXT        NOT NULL
);
