-- Orders, their saga timeline, outbox and consumed events.
CREATE TABLE orders (
    id          UUID        PRIMARY KEY,
    customer_id TEXT        NOT NULL,
    status      TEXT        NOT NULL
        CHECK (status IN ('PENDING', 'PAID', 'COMPENSATING', 'CONFIRMED', 'CANCELLED')),
    items       JSONB       NOT NULL,
    total       BIGINT      NOT NULL CHECK (total > 0),
    currency    TEXT        NOT NULL,
    reason      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX orders_by_created_at ON orders (created_at DESC);

-- Every event seen for an order; shown ordered by the event's own time (ce_time).
CREATE TABLE order_timeline (
    id           BIGSERIAL   PRIMARY KEY,
    order_id     UUID        NOT NULL REFERENCES orders (id),
    event_type   TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    occurred_at  TIMESTAMPTZ NOT NULL,
    recorded_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    status_after TEXT        NOT NULL,
    detail       TEXT
);
CREATE INDEX order_timeline_by_order ON order_timeline (order_id, occurred_at, id);

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
