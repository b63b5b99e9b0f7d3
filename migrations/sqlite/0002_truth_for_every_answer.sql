-- Settings every instance that shares this database agrees on (the cookie
-- secret when COOKIE_SECRET is not set).
CREATE TABLE server_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- When Redis records can vouch for the database: a generation, bumped when
-- orders start to commit around Redis, and the lease those orders hold.
CREATE TABLE record_generation (
    id              INTEGER PRIMARY KEY,
    generation      INTEGER NOT NULL,
    bypass_until_ms INTEGER NOT NULL
);
INSERT INTO record_generation (id, generation, bypass_until_ms) VALUES (1, 1, 0);

-- The attempt that holds a running claim: only it may finish or drop it.
ALTER TABLE idempotency_records ADD COLUMN owner TEXT NULL;
