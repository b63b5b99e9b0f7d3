-- Inventory is the source of truth for stock; `version` is the optimistic
-- lock that every successful write bumps. Times are Unix milliseconds.
CREATE TABLE inventory (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    title         TEXT    NOT NULL,
    item_condition TEXT   NOT NULL,
    seller        TEXT    NOT NULL,
    price_cents   INTEGER NOT NULL CHECK (price_cents >= 0),
    stock         INTEGER NOT NULL CHECK (stock >= 0),
    version       INTEGER NOT NULL DEFAULT 0,
    max_per_buyer INTEGER NULL CHECK (max_per_buyer IS NULL OR max_per_buyer > 0),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- One row per confirmed order. The unique index on (buyer, idempotency_key)
-- makes a duplicate order impossible even if every cache forgot the key.
CREATE TABLE orders (
    id              TEXT    PRIMARY KEY,
    buyer           TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    item_id         INTEGER NOT NULL REFERENCES inventory (id),
    qty             INTEGER NOT NULL CHECK (qty > 0),
    unit_price_cents INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE UNIQUE INDEX orders_buyer_key ON orders (buyer, idempotency_key);
CREATE INDEX orders_item_buyer ON orders (item_id, buyer);

-- Buyer-scoped idempotency records (used when Redis does not hold them).
CREATE TABLE idempotency_records (
    buyer           TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    request_hash    TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    response_status INTEGER NULL,
    response_body   TEXT    NULL,
    lease_until     INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    PRIMARY KEY (buyer, idempotency_key)
);
CREATE INDEX idempotency_records_expiry ON idempotency_records (expires_at);
