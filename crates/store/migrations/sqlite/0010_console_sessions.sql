-- Operators signed in to the web console: the SHA-256 of each session id.
CREATE TABLE console_sessions (
    id_hash BLOB PRIMARY KEY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
