-- The cart id is derived from the session token (a hash of it), so the primary key already
-- makes session tokens unique, and no read looks carts up by session token. The extra unique
-- index cost every capture and every rebuild a random-order index insert (ADR 0007).
ALTER TABLE carts DROP CONSTRAINT carts_session_token_key;
