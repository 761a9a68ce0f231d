-- Notifications sent to customers (the lab only stores them).
CREATE TABLE notifications (
    id          UUID        PRIMARY KEY,
    order_id    UUID        NOT NULL,
    customer_id TEXT,
    kind        TEXT        NOT NULL CHECK (kind IN ('received', 'confirmed', 'cancelled')),
    message     TEXT        NOT NULL,
    event_id    UUID        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX notifications_by_order ON notifications (order_id, created_at);
