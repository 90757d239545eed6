-- Operators signed in to the web console: the SHA-256 of each session id.
CREATE TABLE console_sessions (
    id_hash BLOB PRIMARY KEY,
    -- An HMAC of the session id under the SHA-256 of the admin token it was
    -- signed in with: a session ends when the relay no longer takes that
    -- token, and the row alone says nothing about the token.
    admin_seal BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
