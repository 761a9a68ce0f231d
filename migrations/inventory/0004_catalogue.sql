-- The catalogue as a table (see shared/src/catalogue.rs): each product's state, for the compacted
-- topic `inventory.products` keyed by SKU.
--
-- A product row carries whether its current state is in the catalogue yet. A trigger clears the
-- flag in the very statement that changes what the catalogue shows (name, price, stock), so no
-- change escapes it: a reservation, `PATCH /products/{sku}`, a row changed with psql, a product
-- added (it starts unpublished). `publish_catalogue()`, which the inventory service calls every
-- 100 ms (`saga_shared::catalogue::queue_changes`), moves the state of every unpublished product into the
-- outbox and sets the flag again, in one statement. Only a product's latest state matters on a
-- compacted topic, so ten reservations of one product between two calls publish one record, not
-- ten: the catalogue's traffic is bounded by the number of products, not by the order rate.
ALTER TABLE products ADD COLUMN in_catalogue BOOLEAN NOT NULL DEFAULT false;

CREATE FUNCTION product_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (OLD.name, OLD.price, OLD.stock) IS DISTINCT FROM (NEW.name, NEW.price, NEW.stock) THEN
        NEW.in_catalogue := false;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER product_changed BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION product_changed();

-- The products whose state is not in the catalogue yet, into the outbox; how many. Rows locked
-- by a transaction in progress (a reservation) are skipped: their change is published next time.
CREATE FUNCTION publish_catalogue() RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    queued_rows BIGINT;
BEGIN
    WITH due AS (
        SELECT sku FROM products WHERE NOT in_catalogue ORDER BY sku FOR UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE products p SET in_catalogue = true FROM due WHERE p.sku = due.sku
        RETURNING p.sku, p.name, p.price, p.stock, gen_random_uuid() AS id
    ), queued AS (
        INSERT INTO outbox (event_id, topic, record_key, payload, headers)
        SELECT id, 'inventory.products', m.sku,
               jsonb_build_object('sku', m.sku, 'name', m.name, 'unit_price', m.price,
                                  'stock', m.stock),
               jsonb_build_array(
                   jsonb_build_array('ce_specversion', '1.0'),
                   jsonb_build_array('ce_id', id::text),
                   jsonb_build_array('ce_type', 'inventory.products'),
                   jsonb_build_array('ce_source', '/inventory-service'),
                   jsonb_build_array('ce_time', to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                                        'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
                   jsonb_build_array('content-type', 'application/json'))
          FROM marked m
         ORDER BY m.sku
        RETURNING 1
    )
    SELECT count(*) INTO queued_rows FROM queued;
    -- Wakes the outbox relay (delivered at commit) when there is anything to publish.
    IF queued_rows > 0 THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN queued_rows;
END $$;
