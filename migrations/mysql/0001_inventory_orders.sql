-- Inventory is the source of truth for stock; `version` is the optimistic
-- lock that every successful write bumps. Times are Unix milliseconds.
CREATE TABLE inventory (
    id             BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    title          VARCHAR(200) NOT NULL,
    item_condition VARCHAR(64)  NOT NULL,
    seller         VARCHAR(100) NOT NULL,
    price_cents    BIGINT       NOT NULL CHECK (price_cents >= 0),
    stock          BIGINT       NOT NULL CHECK (stock >= 0),
    version        BIGINT       NOT NULL DEFAULT 0,
    max_per_buyer  BIGINT       NULL CHECK (max_per_buyer IS NULL OR max_per_buyer > 0),
    created_at     BIGINT       NOT NULL,
    updated_at     BIGINT       NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per confirmed order. The unique index on (buyer, idempotency_key)
-- makes a duplicate order impossible even if every cache forgot the key.
CREATE TABLE orders (
    id               VARCHAR(36)  NOT NULL PRIMARY KEY,
    buyer            VARCHAR(64)  NOT NULL,
    idempotency_key  VARCHAR(255) NOT NULL,
    item_id          BIGINT       NOT NULL,
    qty              BIGINT       NOT NULL CHECK (qty > 0),
    unit_price_cents BIGINT       NOT NULL,
    status           VARCHAR(16)  NOT NULL,
    created_at       BIGINT       NOT NULL,
    UNIQUE KEY orders_buyer_key (buyer, idempotency_key),
    KEY orders_item_buyer (item_id, buyer),
    CONSTRAINT orders_item_fk FOREIGN KEY (item_id) REFERENCES inventory (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Buyer-scoped idempotency records (used when Redis does not hold them).
CREATE TABLE idempotency_records (
    buyer           VARCHAR(64)  NOT NULL,
    idempotency_key VARCHAR(255) NOT NULL,
    request_hash    VARCHAR(64)  NOT NULL,
    state           VARCHAR(16)  NOT NULL,
    response_status BIGINT       NULL,
    response_body   VARCHAR(4000) NULL,
    lease_until     BIGINT       NOT NULL,
    expires_at      BIGINT       NOT NULL,
    PRIMARY KEY (buyer, idempotency_key),
    KEY idempotency_records_expiry (expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
