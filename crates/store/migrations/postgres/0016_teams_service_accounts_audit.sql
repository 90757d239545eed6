-- Teams: who owns what. Before there were teams, everything was the
-- team `default`'s.
CREATE TABLE teams (
    name       TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);
INSERT INTO teams (name, created_at) VALUES ('default', (extract(epoch FROM now()) * 1000)::BIGINT);

-- Machine identities with roles in one team; tokens only as hashes.
CREATE TABLE service_accounts (
    id          TEXT COLLATE "C" PRIMARY KEY,
    team        TEXT COLLATE "C" NOT NULL REFERENCES teams (name),
    name        TEXT COLLATE "C" NOT NULL,
    roles       TEXT NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE UNIQUE INDEX service_accounts_live_name ON service_accounts (team, name) WHERE revoked_at IS NULL;

-- Every state-changing request and every refused authorization, appended
-- only; replicas sharing the database append to one trail.
CREATE TABLE audit_log (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time           BIGINT NOT NULL,
    actor_kind     TEXT NOT NULL,
    actor_id       TEXT COLLATE "C" NOT NULL,
    actor_name     TEXT NOT NULL,
    team           TEXT COLLATE "C",
    action         TEXT COLLATE "C" NOT NULL,
    object         TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    status         BIGINT NOT NULL,
    source_address TEXT,
    request_id     TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time);
