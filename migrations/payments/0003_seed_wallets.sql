-- Demo customers: alice and carol can pay, bob is too poor for most orders.
INSERT INTO wallets (customer_id, balance, currency) VALUES
    ('alice', 100000, 'KRW'),
    ('bob',    10000, 'KRW'),
    ('carol',  50000, 'KRW');
