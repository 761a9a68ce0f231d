-- POST /orders with an Idempotency-Key header: the key is stored with the order it created, in
-- the same transaction, with the validated request it came with (to tell a retry from a reuse of
-- the key for another order). The unique constraint makes concurrent retries with one key create
-- one order: the later insert waits for the first and then finds the key taken. NULL (no key)
-- is never equal to another NULL, so orders without a key are not constrained.
ALTER TABLE orders
    ADD COLUMN idempotency_key     TEXT UNIQUE CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    ADD COLUMN idempotency_request JSONB;
