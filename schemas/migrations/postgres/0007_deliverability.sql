-- What happened to recovery messages: send, delivery, open, click, bounce, complaint and
-- unsubscribe, with the recipient as its subject hash. Rebuilt from `recovery/dispatched`,
-- `recovery/delivery_reported`, `recovery/restore_clicked` and `recovery/unsubscribed`;
-- rows older than `recovery.deliverability_days` are pruned.
CREATE TABLE deliverability_events (
    position       bigint      PRIMARY KEY, -- the event's global position
    kind           text        NOT NULL,
    run_id         text,
    message_key    text,
    channel        text,
    recipient_hash text,
    detail         text,
    at             timestamptz NOT NULL
);
CREATE INDEX deliverability_events_at ON deliverability_events (at);
CREATE INDEX deliverability_events_kind ON deliverability_events (kind, at);
