-- The `recovery` projector, which wrote every recovery read table, is split into four, each
-- the only writer of its tables: `recovery_sequences` (sequences, templates), `recovery_runs`
-- (runs, notifications, links, restores, coupons, the deliverability feed), `suppression` and
-- `orders`. Each takes the old checkpoint, so a database projected under the old name goes on
-- from where it was and applies no event twice; the old checkpoint goes. On a fresh database
-- there is no old checkpoint, and nothing is copied.
INSERT INTO checkpoints (name, tx, position)
    SELECT split.name, old.tx, old.position
    FROM checkpoints old
    CROSS JOIN (
        SELECT 'recovery_sequences' AS name
        UNION ALL SELECT 'recovery_runs'
        UNION ALL SELECT 'suppression'
        UNION ALL SELECT 'orders'
    ) split
    WHERE old.name = 'recovery'
ON CONFLICT (name) DO NOTHING;
DELETE FROM checkpoints WHERE name = 'recovery';
