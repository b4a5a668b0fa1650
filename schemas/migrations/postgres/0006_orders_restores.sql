-- Orders OCart has heard of (order API, WooCommerce webhooks) and the cart each converted;
-- restore-link clicks and their outcome. Rebuilt from `order/*` and
-- `recovery/restore_clicked` events. No personal data: the buyer is a subject hash.
CREATE TABLE orders (
    order_id        text        PRIMARY KEY, -- the store's id
    order_key       text        NOT NULL UNIQUE, -- the aggregate id
    status          text        NOT NULL,
    paid            boolean     NOT NULL,
    payment_method  text,
    currency        text        NOT NULL,
    total_minor     bigint      NOT NULL,
    email_hash      text,
    placed_at       timestamptz NOT NULL,
    source          text        NOT NULL,
    cart_id         text,
    matched_by      text,       -- session, restore_token, coupon, email
    outcome         text,       -- recovered, completed_before_abandonment
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_position   bigint      NOT NULL
);
CREATE INDEX orders_email_paid ON orders (email_hash, placed_at);
CREATE INDEX orders_cart ON orders (cart_id);
CREATE INDEX orders_placed ON orders (placed_at, order_id);

CREATE TABLE recovery_restores (
    position    bigint      PRIMARY KEY, -- the event's global position
    run_id      text        NOT NULL,
    cart_id     text        NOT NULL,
    message_key text        NOT NULL,
    outcome     text        NOT NULL,    -- restored, partial, failed
    reason      text,
    clicked_at  timestamptz NOT NULL
);
CREATE INDEX recovery_restores_run ON recovery_restores (run_id);
CREATE INDEX recovery_restores_clicked ON recovery_restores (clicked_at);

-- Recovery coupons OCart issued (its own registry in the embedded mode; mirrored when the
-- WooCommerce connector creates them in the store). Codes are stored upper case.
CREATE TABLE recovery_coupons (
    code          text        PRIMARY KEY,
    cart_id       text        NOT NULL,
    run_id        text        NOT NULL,
    message_key   text        NOT NULL,
    email_hash    text,
    kind          text        NOT NULL, -- percent or fixed_cart
    amount        bigint     NOT NULL, -- percent, or minor units
    currency      text        NOT NULL,
    status        text        NOT NULL, -- active, used, expired
    issued_at     timestamptz   NOT NULL,
    expires_at    timestamptz   NOT NULL,
    used_order_id text,
    store_id      bigint,      -- the coupon's id in the store (WooCommerce)
    last_position bigint     NOT NULL
);
CREATE INDEX recovery_coupons_cart ON recovery_coupons (cart_id);
CREATE INDEX recovery_coupons_expiry ON recovery_coupons (status, expires_at);
