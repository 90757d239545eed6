-- Secrets, encrypted with AES-256-GCM under a key kept outside the database.
CREATE TABLE secrets (
    name       TEXT COLLATE "C" PRIMARY KEY,
    nonce      BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One webhook run: the call, its retries, and the wait for the callback.
-- spec holds what is needed to render the request again (never secret values);
-- request holds the last rendered request with secrets masked.
CREATE TABLE webhook_runs (
    id              TEXT COLLATE "C" PRIMARY KEY,
    callback_id     TEXT NOT NULL,
    webhook         TEXT NOT NULL,
    environment     TEXT,
    spec            TEXT NOT NULL,
    request         TEXT,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    deadline_at     BIGINT,
    success         BOOLEAN,
    md_message      TEXT,
    reason          TEXT,
    callback_at     BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    CONSTRAINT webhook_runs_callback_id UNIQUE (callback_id)
);
CREATE INDEX webhook_runs_unfinished ON webhook_runs (state) WHERE finished_at IS NULL;
CREATE INDEX webhook_runs_created ON webhook_runs (created_at);

CREATE TABLE webhook_attempts (
    run_id     TEXT NOT NULL REFERENCES webhook_runs (id),
    number     BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    status     BIGINT,
    error      TEXT,
    reply      TEXT,
    PRIMARY KEY (run_id, number)
);
