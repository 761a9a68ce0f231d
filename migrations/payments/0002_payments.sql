-- Wallets, payments (one per order).
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
