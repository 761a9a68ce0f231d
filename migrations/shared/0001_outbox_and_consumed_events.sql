-- The tables every service's database has, written once: each service's migrations start at
-- version 2 and run after this one (see `saga_shared::db::migrator`).

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
