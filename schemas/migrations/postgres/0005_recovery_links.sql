-- The links a recovery message carries (restore, unsubscribe), by the sha256 of their token;
-- the tokens themselves are never stored. Rebuilt from `recovery/dispatched` events.
CREATE TABLE recovery_links (
    token_hash     text        PRIMARY KEY,
    purpose        text        NOT NULL, -- restore or unsubscribe
    run_id         text        NOT NULL,
    message_key    text        NOT NULL,
    cart_id        text        NOT NULL,
    channel        text        NOT NULL,
    recipient_hash text,
    created_at     timestamptz NOT NULL
);
