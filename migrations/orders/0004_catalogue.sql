-- The order service's copy of the catalogue (see shared/src/catalogue.rs), read from the
-- compacted topic `inventory.products`: the prices it charges. Where each row was read from, and
-- the position it has read up to per partition, are written in the same transaction as the rows.
CREATE TABLE catalogue (
    sku        TEXT        PRIMARY KEY,
    name       TEXT        NOT NULL,
    unit_price BIGINT      NOT NULL CHECK (unit_price > 0),
    stock      BIGINT      NOT NULL,
    partition  INT         NOT NULL,
    "offset"   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE catalogue_position (
    partition   INT    PRIMARY KEY,
    next_offset BIGINT NOT NULL
);
