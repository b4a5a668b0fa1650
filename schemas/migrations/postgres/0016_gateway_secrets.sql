-- Gateway secrets rotated by `ocart gateway rotate` (ADR 0016): the WooCommerce order
-- webhooks' secret, Stripe's webhook signing secrets and the one-click upsell token keys.
-- An operational table like `key_vault` and `server_secrets`, not a read table: no projector
-- writes it and a replay leaves it alone; the log only records that a rotation happened
-- (`gateway/secret_rotated`: purpose, version, when the earlier versions retire).
--
-- `sealed` is nonce || AES-256-GCM(secret) under a key derived from the server secret, with
-- "purpose:version" as associated data, so a dump of this table shows no secret. Version 0 is
-- the config file's secret (or, for upsell tokens, the derived key): its row has no `sealed`
-- value and only says when it retires. `retire_at` NULL: accepted until a later rotation.
CREATE TABLE gateway_secrets (
    purpose    text        NOT NULL, -- woocommerce-webhook, stripe-webhook, upsell-token
    version    integer     NOT NULL,
    sealed     bytea,
    created_at timestamptz NOT NULL,
    retire_at  timestamptz,
    PRIMARY KEY (purpose, version)
);
