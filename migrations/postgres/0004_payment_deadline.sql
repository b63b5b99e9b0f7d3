-- Payment deadline. With PAYMENT_WINDOW_SECS set, an order is created
-- 'awaiting_payment' with the deadline its 201 answer announced (pay_by_ms),
-- and ends 'paid', or 'expired' (its units back in stock), and 'refund_due'
-- when a payment arrives after the expiry. Without a window pay_by_ms stays
-- NULL and the order 'confirmed', as before. Times are Unix milliseconds.
ALTER TABLE orders ADD COLUMN pay_by_ms BIGINT NULL;
ALTER TABLE orders ADD COLUMN paid_at_ms BIGINT NULL;
ALTER TABLE orders ADD COLUMN expired_at_ms BIGINT NULL;
-- The expiry reaper's worklist: awaiting orders by deadline.
CREATE INDEX orders_status_deadline ON orders (status, pay_by_ms);

-- One row per payment event applied, keyed by the provider's event id: a
-- repeated event answers its stored result and changes nothing. `result` is
-- 'paid', 'refund_due' (paid after the expiry) or 'duplicate' (the order
-- was already paid): the last two are refunds the operator owes.
CREATE TABLE payment_events (
    event_id       VARCHAR(255) PRIMARY KEY,
    order_id       VARCHAR(36)  NOT NULL REFERENCES orders (id),
    amount_cents   BIGINT       NOT NULL,
    result         VARCHAR(16)  NOT NULL,
    received_at_ms BIGINT       NOT NULL
);
CREATE INDEX payment_events_result ON payment_events (result, received_at_ms);
