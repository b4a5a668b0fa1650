-- Orders OCart has heard of (order API, WooCommerce webhooks) and the cart each converted;
-- restore-link clicks and their outcome. Rebuilt from `order/*` and
-- `recovery/restore_clicked` events. No personal data: the buyer is a subject hash.
CREATE TABLE orders (
    order_id        TEXT        PRIMARY KEY, -- the store's id
    order_key       TEXT        NOT NULL UNIQUE, -- the aggregate id
    status          TEXT        NOT NULL,
    paid            BOOLEAN     NOT NULL,
    payment_method  TEXT,
    currency        TEXT        NOT NULL,
    total_minor     INTEGER     NOT NULL,
    email_hash      TEXT,
    placed_at       TEXT        NOT NULL,
    source          TEXT        NOT NULL,
    cart_id         TEXT,
    matched_by      TEXT,       -- session, restore_token, coupon, email
    outcome         TEXT,       -- recovered, completed_before_abandonment
    created_at      TEXT        NOT NULL,
    updated_at      TEXT        NOT NULL,
    last_position   INTEGER     NOT NULL
);
CREATE INDEX orders_email_paid ON orders (email_hash, placed_at);
CREATE INDEX orders_cart ON orders (cart_id);
CREATE INDEX orders_placed ON orders (placed_at, order_id);

CREATE TABLE recovery_restores (
    position    INTEGER     PRIMARY KEY, -- the event's global position
    run_id      TEXT        NOT NULL,
    cart_id     TEXT        NOT NULL,
    message_key TEXT        NOT NULL,
    outcome     TEXT        NOT NULL,    -- restored, partial, failed
    reason      TEXT,
    clicked_at  TEXT        NOT NULL
);
CREATE INDEX recovery_restores_run ON recovery_restores (run_id);
CREATE INDEX recovery_restores_clicked ON recovery_restores (clicked_at);

-- Recovery coupons OCart issued (its own registry in the embedded mode; mirrored when the
-- WooCommerce connector creates them in the store). Codes are stored upper case.
CREATE TABLE recovery_coupons (
    code          TEXT        PRIMARY KEY,
    cart_id       TEXT        NOT NULL,
    run_id        TEXT        NOT NULL,
    message_key   TEXT        NOT NULL,
    email_hash    TEXT,
    kind          TEXT        NOT NULL, -- percent or fixed_cart
    amount        INTEGER     NOT NULL, -- percent, or minor units
    currency      TEXT        NOT NULL,
    status        TEXT        NOT NULL, -- active, used, expired
    issued_at     TEXT   NOT NULL,
    expires_at    TEXT   NOT NULL,
    used_order_id TEXT,
    store_id      INTEGER,      -- the coupon's id in the store (WooCommerce)
    last_position INTEGER     NOT NULL
);
CREATE INDEX recovery_coupons_cart ON recovery_coupons (cart_id);
CREATE INDEX recovery_coupons_expiry ON recovery_coupons (status, expires_at);
