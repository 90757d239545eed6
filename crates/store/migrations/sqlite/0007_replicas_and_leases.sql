-- Leases and replica records, as on PostgreSQL (where several relays share
-- one database). On SQLite one relay owns everything; the columns keep the
-- two backends' behaviour the same.
ALTER TABLE webhook_runs ADD COLUMN lease_owner TEXT;
ALTER TABLE webhook_runs ADD COLUMN lease_until INTEGER;
CREATE INDEX webhook_runs_due ON webhook_runs (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_runs_deadlines ON webhook_runs (deadline_at) WHERE state = 'awaiting_callback';
ALTER TABLE deployments ADD COLUMN lease_owner TEXT;
ALTER TABLE deployments ADD COLUMN lease_until INTEGER;

CREATE TABLE relay_replicas (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    peer_url   TEXT,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL
);

CREATE TABLE agent_sessions (
    session_id   TEXT PRIMARY KEY,
    replica_id   TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    instance     TEXT NOT NULL,
    version      TEXT NOT NULL,
    remote_addr  TEXT,
    connected_at INTEGER NOT NULL
);
CREATE INDEX agent_sessions_by_agent ON agent_sessions (agent_id);
CREATE INDEX agent_sessions_by_replica ON agent_sessions (replica_id);
