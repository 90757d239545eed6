-- Every object belongs to a team: what was stored before teams is the team
-- `default`'s. Names, subjects and Idempotency-Keys are unique within a
-- team, and one deployment per application runs at a time in each team
-- (the indexes keep their names, by which the store tells conflicts
-- apart). A constant default adds a column without rewriting the table.
ALTER TABLE credentials ADD COLUMN team TEXT COLLATE "C" NOT NULL DEFAULT 'default';
DROP INDEX credentials_one_active;
CREATE UNIQUE INDEX credentials_one_active ON credentials (kind, team, subject) WHERE revoked_at IS NULL;

-- The trigger announcing secret changes stays: its payload is still the
-- name (`secret:NAME`), which is enough for replicas to drop their copies.
ALTER TABLE secrets ADD COLUMN team TEXT COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE secrets DROP CONSTRAINT secrets_pkey, ADD PRIMARY KEY (team, name);

ALTER TABLE metric_providers ADD COLUMN team TEXT COLLATE "C" NOT NULL DEFAULT 'default';
ALTER TABLE metric_providers DROP CONSTRAINT metric_providers_pkey, ADD PRIMARY KEY (team, name);

ALTER TABLE webhook_runs ADD COLUMN team TEXT COLLATE "C" NOT NULL DEFAULT 'default';
DROP INDEX webhook_runs_idempotency;
CREATE UNIQUE INDEX webhook_runs_idempotency ON webhook_runs (team, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- A team's page, newest first: the page query's `($1 IS NULL OR team = $1)`
-- is planned with the team bound, which finds a small team's by this index.
CREATE INDEX webhook_runs_team_created ON webhook_runs (team, created_at);

ALTER TABLE deployments ADD COLUMN team TEXT COLLATE "C" NOT NULL DEFAULT 'default';
DROP INDEX deployments_one_running;
CREATE UNIQUE INDEX deployments_one_running ON deployments (team, application) WHERE finished_at IS NULL;
DROP INDEX deployments_idempotency;
CREATE UNIQUE INDEX deployments_idempotency ON deployments (team, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX deployments_team_created ON deployments (team, created_at);

-- An agent is known by its team and identifier.
ALTER TABLE agent_sessions ADD COLUMN team TEXT COLLATE "C" NOT NULL DEFAULT 'default';
DROP INDEX agent_sessions_by_agent;
CREATE INDEX agent_sessions_by_agent ON agent_sessions (team, agent_id);
