-- What happened to recovery messages: send, delivery, open, click, bounce, complaint and
-- unsubscribe, with the recipient as its subject hash. Rebuilt from `recovery/dispatched`,
-- `recovery/delivery_reported`, `recovery/restore_clicked` and `recovery/unsubscribed`;
-- rows older than `recovery.deliverability_days` are pruned.
CREATE TABLE deliverability_events (
    position       INTEGER     PRIMARY KEY, -- the event's global position
    kind           TEXT        NOT NULL,
    run_id         TEXT,
    message_key    TEXT,
    channel        TEXT,
    recipient_hash TEXT,
    detail         TEXT,
    at             TEXT        NOT NULL
);
CREATE INDEX deliverability_events_at ON deliverability_events (at);
CREATE INDEX deliverability_events_kind ON deliverability_events (kind, at);
