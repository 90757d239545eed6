-- Operators signed in to the web console: the SHA-256 of each session id.
CREATE TABLE console_sessions (
    id_hash BYTEA PRIMARY KEY,
    -- The SHA-256 of the admin token signed in with: a session ends when
    -- the relay no longer takes that token.
    admin_hash BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
