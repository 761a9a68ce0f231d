-- Products (available stock and units reserved by confirmed orders) and reservations.
-- Invariant: stock + reserved stays what was seeded.
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
