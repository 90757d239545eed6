-- Secrets, encrypted with AES-256-GCM under a key kept outside the database.
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);

-- One webhook run: the call, its retries, and the wait for the callback.
-- spec holds what is needed to render the request again (never secret values);
-- request holds the last rendered request with secrets masked.
CREATE TABLE webhook_runs (
    id              TEXT PRIMARY KEY NOT NULL,
    callback_id     TEXT NOT NULL UNIQUE,
    webhook         TEXT NOT NULL,
    environment     TEXT,
    spec            TEXT NOT NULL,
    request         TEXT,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    deadline_at     INTEGER,
    success         INTEGER,
    md_message      TEXT,
    reason          TEXT,
    callback_at     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX webhook_runs_unfinished ON webhook_runs (state) WHERE finished_at IS NULL;
CREATE INDEX webhook_runs_created ON webhook_runs (created_at);

CREATE TABLE webhook_attempts (
    run_id     TEXT NOT NULL REFERENCES webhook_runs (id),
    number     INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL,
    status     INTEGER,
    error      TEXT,
    reply      TEXT,
    PRIMARY KEY (run_id, number)
);
