-- Several relays on one database. A lease names the replica (its id for this
-- process) that owns a run's attempt or a deployment's run, and until when
-- (milliseconds since the epoch). A lease that runs out is taken over.
ALTER TABLE webhook_runs ADD COLUMN lease_owner TEXT, ADD COLUMN lease_until BIGINT;
CREATE INDEX webhook_runs_due ON webhook_runs (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_runs_leased ON webhook_runs (lease_until) WHERE state = 'calling';
CREATE INDEX webhook_runs_deadlines ON webhook_runs (deadline_at) WHERE state = 'awaiting_callback';
ALTER TABLE deployments ADD COLUMN lease_owner TEXT, ADD COLUMN lease_until BIGINT;

-- The relay processes alive (seen_at refreshed every few seconds).
CREATE TABLE relay_replicas (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    peer_url   TEXT,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);

-- The agent sessions each replica holds, so any replica finds an agent's.
CREATE TABLE agent_sessions (
    session_id   TEXT COLLATE "C" PRIMARY KEY,
    replica_id   TEXT NOT NULL,
    agent_id     TEXT COLLATE "C" NOT NULL,
    instance     TEXT NOT NULL,
    version      TEXT NOT NULL,
    remote_addr  TEXT,
    connected_at BIGINT NOT NULL
);
CREATE INDEX agent_sessions_by_agent ON agent_sessions (agent_id);
CREATE INDEX agent_sessions_by_replica ON agent_sessions (replica_id);

-- Changes announced to the other replicas, committed with the change itself.
-- The channel is per schema (hashed, to stay within identifier length), so
-- relays on other schemas of the same database hear nothing of these.
CREATE FUNCTION borealis_notify_by_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('borealis_' || left(md5(current_schema()), 16), TG_ARGV[0] || ':' || NEW.id);
    RETURN NULL;
END $$;

CREATE FUNCTION borealis_notify_by_deployment() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('borealis_' || left(md5(current_schema()), 16), 'deployment:' || NEW.deployment_id);
    RETURN NULL;
END $$;

CREATE FUNCTION borealis_notify_credential() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('borealis_' || left(md5(current_schema()), 16), 'credential:' || NEW.client_id);
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_runs_changed AFTER UPDATE ON webhook_runs
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION borealis_notify_by_id('run');
CREATE TRIGGER deployments_changed AFTER UPDATE ON deployments
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state) EXECUTE FUNCTION borealis_notify_by_id('deployment');
CREATE TRIGGER deployment_targets_changed AFTER INSERT OR UPDATE ON deployment_targets
    FOR EACH ROW EXECUTE FUNCTION borealis_notify_by_deployment();
CREATE TRIGGER approvals_changed AFTER INSERT OR UPDATE ON approvals
    FOR EACH ROW EXECUTE FUNCTION borealis_notify_by_deployment();
CREATE TRIGGER credentials_changed AFTER UPDATE ON credentials
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at) EXECUTE FUNCTION borealis_notify_credential();
