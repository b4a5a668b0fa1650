-- An audit entry's id is its event's global position, not a counter of its own: a counter
-- renumbered every entry on a rebuild (`ocart replay`), so ids shown by the API and the CLI
-- changed. The position is fixed in the log, so a rebuild keeps every id. Existing entries
-- take their event's position (negated first, so no id collides while they move).
ALTER TABLE audit_log ALTER COLUMN id DROP IDENTITY;
UPDATE audit_log SET id = -id;
UPDATE audit_log a SET id = e.global_position FROM events e WHERE e.event_id::text = a.event_id;
COMMENT ON COLUMN audit_log.id IS 'the global position of the event';
