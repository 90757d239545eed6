-- A person's own tokens, for the CLI: who they act as, as the provider
-- vouched for them at sign-in (groups as a JSON array of names); only the
-- secret's hash is kept.
CREATE TABLE personal_tokens (
    id          TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    name        TEXT NOT NULL,
    groups      TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
-- A person's tokens, newest first.
CREATE INDEX personal_tokens_by_subject ON personal_tokens (subject, created_at);
