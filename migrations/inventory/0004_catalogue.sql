-- The catalogue as a table (see shared/src/catalogue.rs): every change of a product row puts the
-- product's whole new state in the outbox, in the same transaction, for the compacted topic
-- `inventory.products` keyed by SKU. A trigger, so that no change escapes it: a reservation, a
-- price changed by hand with psql, a product added.
CREATE FUNCTION publish_product(p products) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    id UUID := gen_random_uuid();
BEGIN
    INSERT INTO outbox (event_id, topic, record_key, payload, headers)
    VALUES (
        id, 'inventory.products', p.sku,
        jsonb_build_object('sku', p.sku, 'name', p.name, 'unit_price', p.price, 'stock', p.stock),
        jsonb_build_array(
            jsonb_build_array('ce_specversion', '1.0'),
            jsonb_build_array('ce_id', id::text),
            jsonb_build_array('ce_type', 'inventory.products'),
            jsonb_build_array('ce_source', '/inventory-service'),
            jsonb_build_array('ce_time', to_char(clock_timestamp() AT TIME ZONE 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')),
            jsonb_build_array('content-type', 'application/json')));
    PERFORM pg_notify('outbox', '');
END $$;

CREATE FUNCTION products_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM publish_product(NEW);
    RETURN NULL;
END $$;

CREATE TRIGGER product_added AFTER INSERT ON products
    FOR EACH ROW EXECUTE FUNCTION products_changed();
-- `reserved` and `updated_at` are not part of the catalogue: a change of only those is not one.
CREATE TRIGGER product_changed AFTER UPDATE ON products
    FOR EACH ROW
    WHEN ((OLD.name, OLD.price, OLD.stock) IS DISTINCT FROM (NEW.name, NEW.price, NEW.stock))
    EXECUTE FUNCTION products_changed();

-- The products seeded before: published once, as any change is.
SELECT publish_product(p) FROM products p ORDER BY p.sku;
