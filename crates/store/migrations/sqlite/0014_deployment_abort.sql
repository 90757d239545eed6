-- A request to stop a running deployment, from any replica: the replica
-- holding its lease carries it out. The first request stands.
ALTER TABLE deployments ADD COLUMN abort_reason TEXT;
ALTER TABLE deployments ADD COLUMN abort_rollback INTEGER;
ALTER TABLE deployments ADD COLUMN abort_requested_at INTEGER;
