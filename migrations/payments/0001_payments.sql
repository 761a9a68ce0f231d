-- Wallets, payments (one per order), outbox and consumed events.
CREATE TABLE wallets (
    customer_id TEXT        PRIMARY KEY,
    balance     BIGINT      NOT NULL CHECK (balance >= 0),
    currency    TEXT        NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE payments (
    id          UUID        PRIMARY KEY,
    order_id    UUID        NOT NULL UNIQUE,
    customer_id TEXT        NOT NULL,
    amount      BIGINT      NOT NULL,
    currency    TEXT        NOT NULL,
    -- CAPTURED: charged; REFUNDED: compensated; FAILED: refused (amount not taken).
    status      TEXT        NOT NULL CHECK (status IN ('CAPTURED', 'REFUNDED', 'FAILED')),
    reason      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX payments_by_customer ON payments (customer_id);

-- The transactional outbox (see shared/src/outbox.rs).
CREATE TABLE outbox (
    id           BIGSERIAL PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    topic        TEXT        NOT NULL,
    record_key   TEXT        NOT NULL,
    payload      JSONB       NOT NULL,
    headers      JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    published_at TIMESTAMPTZ
);
-- The relay scans pending rows in id order, and checks for an older pending row of the same key.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_pending_by_key ON outbox (record_key, id) WHERE published_at IS NULL;

-- Idempotent consumption: the ce_id of every event already applied (see shared/src/consumer.rs).
CREATE TABLE consumed_events (
    consumer_group TEXT        NOT NULL,
    event_id       UUID        NOT NULL,
    topic          TEXT        NOT NULL,
    consumed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, event_id)
);
