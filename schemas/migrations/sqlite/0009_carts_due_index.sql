-- The abandonment sweeper scans due carts by keyset, (last_activity_at, cart_id) past the
-- last cart it marked, so the index carries the cart id too.
DROP INDEX IF EXISTS carts_status_activity;
CREATE INDEX carts_due ON carts (status, last_activity_at, cart_id);
