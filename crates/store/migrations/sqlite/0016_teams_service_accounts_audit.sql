-- Teams: who owns what. Before there were teams, everything was the
-- team `default`'s.
CREATE TABLE teams (
    name       TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
);
INSERT INTO teams (name, created_at) VALUES ('default', CAST(strftime('%s', 'now') AS INTEGER) * 1000);

-- Machine identities with roles in one team; tokens only as hashes.
CREATE TABLE service_accounts (
    id          TEXT PRIMARY KEY,
    team        TEXT NOT NULL REFERENCES teams (name),
    name        TEXT NOT NULL,
    roles       TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE UNIQUE INDEX service_accounts_live_name ON service_accounts (team, name) WHERE revoked_at IS NULL;

-- Every state-changing request and every refused authorization, appended only.
CREATE TABLE audit_log (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    time           INTEGER NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT NOT NULL,
    actor_name     TEXT NOT NULL,
    team           TEXT,
    action         TEXT NOT NULL,
    object         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    status         INTEGER NOT NULL,
    source_address TEXT,
    request_id     TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time);
