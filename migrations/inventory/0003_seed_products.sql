-- The coffee menu; ICED_TEA has no stock so the compensation path can be triggered on purpose.
INSERT INTO products (sku, name, price, stock) VALUES
    ('AMERICANO',     'Americano',     4000, 100),
    ('LATTE',         'Caffe Latte',   5000, 100),
    ('VANILLA_LATTE', 'Vanilla Latte', 5500,  50),
    ('COLD_BREW',     'Cold Brew',     5000,  50),
    ('MOCHA',         'Caffe Mocha',   5500,  30),
    ('ICED_TEA',      'Iced Tea',      4500,   0);
