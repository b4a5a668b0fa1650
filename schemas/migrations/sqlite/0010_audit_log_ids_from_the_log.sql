-- An audit entry's id is its event's global position, not a counter of its own: a counter
-- renumbered every entry on a rebuild (`ocart replay`), so ids shown by the API and the CLI
-- changed. The position is fixed in the log, so a rebuild keeps every id. SQLite cannot drop
-- AUTOINCREMENT, so the table is rebuilt; existing entries take their event's position.
CREATE TABLE audit_log_next (
    id          INTEGER PRIMARY KEY, -- the global position of the event
    event_id    TEXT    NOT NULL UNIQUE,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    object_type TEXT    NOT NULL,
    object_id   TEXT    NOT NULL,
    diff        TEXT    NOT NULL,
    ip          TEXT,
    at          TEXT    NOT NULL
);
INSERT INTO audit_log_next (id, event_id, actor, action, object_type, object_id, diff, ip, at)
    SELECT e.global_position, a.event_id, a.actor, a.action, a.object_type, a.object_id,
           a.diff, a.ip, a.at
    FROM audit_log a JOIN events e ON e.event_id = a.event_id;
DROP TABLE audit_log;
ALTER TABLE audit_log_next RENAME TO audit_log;
CREATE INDEX audit_log_at ON audit_log (at);
