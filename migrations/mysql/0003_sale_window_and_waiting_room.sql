-- Drop day, the start. An item may have a sale window (epoch ms, each end
-- optional), a waiting room (admission_per_second; passes valid
-- pass_ttl_seconds; paused admits nobody) and a fair-start seed: committed
-- (its SHA-256 published) from the item's creation, revealed at the start.
ALTER TABLE inventory ADD COLUMN sale_starts_at_ms BIGINT NULL;
ALTER TABLE inventory ADD COLUMN sale_ends_at_ms BIGINT NULL;
ALTER TABLE inventory ADD COLUMN admission_per_second BIGINT NULL;
ALTER TABLE inventory ADD COLUMN pass_ttl_seconds BIGINT NOT NULL DEFAULT 120;
ALTER TABLE inventory ADD COLUMN paused BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inventory ADD COLUMN fairness_seed VARCHAR(64) NULL;

-- Who joined an item's waiting room, with the ticket they were given and
-- when (the database's clock): the fair order of everyone who joined before
-- the start can be checked against the revealed seed from this table alone,
-- and the line is rebuilt from it if Redis loses it.
CREATE TABLE queue_tickets (
    item_id      BIGINT      NOT NULL REFERENCES inventory (id),
    buyer        VARCHAR(64) NOT NULL,
    ticket       VARCHAR(36) NOT NULL,
    joined_at_ms BIGINT      NOT NULL,
    PRIMARY KEY (item_id, buyer)
);
CREATE UNIQUE INDEX queue_tickets_ticket ON queue_tickets (ticket);

-- The pass an order was placed with: part of what a replay must match.
ALTER TABLE orders ADD COLUMN queue_pass VARCHAR(64) NULL;
