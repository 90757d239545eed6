-- Settings shared by every relay replica (token signing key, ...).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value BLOB NOT NULL
);

-- OAuth client credentials. Secrets are stored only as SHA-256 hashes.
-- kind: 'agent' (subject = agent identifier) or 'callback' (subject = client name).
CREATE TABLE credentials (
    client_id   TEXT PRIMARY KEY NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('agent', 'callback')),
    subject     TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- One live credential per agent identifier or client name.
CREATE UNIQUE INDEX credentials_one_active ON credentials (kind, subject) WHERE revoked_at IS NULL;
