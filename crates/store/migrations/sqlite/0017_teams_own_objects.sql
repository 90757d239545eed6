-- Every object belongs to a team: what was stored before teams is the team
-- `default`'s. Names, subjects and Idempotency-Keys are unique within a
-- team, and one deployment per application runs at a time in each team.
ALTER TABLE credentials ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
DROP INDEX credentials_one_active;
CREATE UNIQUE INDEX credentials_one_active ON credentials (kind, team, subject) WHERE revoked_at IS NULL;

-- SQLite cannot change a primary key: secrets and metric providers are
-- rebuilt keyed by (team, name). Nothing refers to either table.
CREATE TABLE secrets_by_team (
    team       TEXT NOT NULL DEFAULT 'default',
    name       TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    updated_at INTEGER NOT NULL,
    uses       TEXT NOT NULL DEFAULT 'webhooks',
    PRIMARY KEY (team, name)
);
INSERT INTO secrets_by_team (team, name, nonce, ciphertext, updated_at, uses)
    SELECT 'default', name, nonce, ciphertext, updated_at, uses FROM secrets;
DROP TABLE secrets;
ALTER TABLE secrets_by_team RENAME TO secrets;

CREATE TABLE metric_providers_by_team (
    team       TEXT NOT NULL DEFAULT 'default',
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    url        TEXT NOT NULL,
    agent      TEXT,
    headers    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (team, name)
);
INSERT INTO metric_providers_by_team (team, name, kind, url, agent, headers, created_at)
    SELECT 'default', name, kind, url, agent, headers, created_at FROM metric_providers;
DROP TABLE metric_providers;
ALTER TABLE metric_providers_by_team RENAME TO metric_providers;

ALTER TABLE webhook_runs ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
DROP INDEX webhook_runs_idempotency;
CREATE UNIQUE INDEX webhook_runs_idempotency ON webhook_runs (team, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- No index for a team's page (PostgreSQL has one): the page query's
-- `($1 IS NULL OR team = $1)` keeps SQLite's planner on the time index.

ALTER TABLE deployments ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
DROP INDEX deployments_one_running;
CREATE UNIQUE INDEX deployments_one_running ON deployments (team, application) WHERE finished_at IS NULL;
DROP INDEX deployments_idempotency;
CREATE UNIQUE INDEX deployments_idempotency ON deployments (team, idempotency_key) WHERE idempotency_key IS NOT NULL;

-- An agent is known by its team and identifier.
ALTER TABLE agent_sessions ADD COLUMN team TEXT NOT NULL DEFAULT 'default';
DROP INDEX agent_sessions_by_agent;
CREATE INDEX agent_sessions_by_agent ON agent_sessions (team, agent_id);
