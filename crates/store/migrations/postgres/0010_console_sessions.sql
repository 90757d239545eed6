-- Operators signed in to the web console: the SHA-256 of each session id.
CREATE TABLE console_sessions (
    id_hash BYTEA PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
