-- Products (available stock and units reserved by confirmed orders), reservations, outbox and
-- consumed events. Invariant: stock + reserved stays what was seeded.
CREATE TABLE products (
    sku        TEXT        PRIMARY KEY,
    name       TEXT        NOT NULL,
    price      BIGINT      NOT NULL,
    stock      BIGINT      NOT NULL CHECK (stock >= 0),
    reserved   BIGINT      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE reservations (
    order_id   UUID        NOT NULL,
    sku        TEXT        NOT NULL REFERENCES products (sku),
    quantity   BIGINT      NOT NULL CHECK (quantity > 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);

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
