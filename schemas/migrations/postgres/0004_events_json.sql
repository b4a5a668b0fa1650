-- Event payloads and metadata as `json` (the text as written, checked to be JSON) instead of
-- `jsonb`. Every reader (projections, the relay, rebuilds) fetches them as text, and turning
-- jsonb back into text cost PostgreSQL about 4 µs per event, most of a replay's read time; no
-- query looks inside them (ADR 0007). Rewriting the column does not fire the append-only
-- triggers, which guard against row updates.
ALTER TABLE events
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;
