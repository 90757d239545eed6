-- A person's own tokens, for the CLI: who they act as, as the provider
-- vouched for them at sign-in (groups as a JSON array of names); only the
-- secret's hash is kept.
CREATE TABLE personal_tokens (
    id          TEXT COLLATE "C" PRIMARY KEY,
    subject     TEXT COLLATE "C" NOT NULL,
    name        TEXT NOT NULL,
    groups      TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
-- A person's tokens, newest first.
CREATE INDEX personal_tokens_by_subject ON personal_tokens (subject, created_at);
