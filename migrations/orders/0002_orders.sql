-- Orders and their saga timeline.
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
