-- The schema of migrations/sqlite, version for version, in Postgres types:
-- times are BIGINT milliseconds since the Unix epoch (as SQLite stores
-- them, so records read back identical), blobs BYTEA, flags BOOLEAN, and
-- the text columns lists are ordered by COLLATE "C": byte order, as SQLite
-- sorts, whatever locale the database was created with.

-- Settings shared by every relay replica (token signing key, ...).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- OAuth client credentials. Secrets are stored only as SHA-256 hashes.
-- kind: 'agent' (subject = agent identifier) or 'callback' (subject = client name).
CREATE TABLE credentials (
    client_id   TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('agent', 'callback')),
    subject     TEXT COLLATE "C" NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

-- One live credential per agent identifier or client name.
CREATE UNIQUE INDEX credentials_one_active ON credentials (kind, subject) WHERE revoked_at IS NULL;
