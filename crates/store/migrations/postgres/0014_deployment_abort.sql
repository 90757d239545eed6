-- A request to stop a running deployment, from any replica: the replica
-- holding its lease carries it out. The first request stands.
ALTER TABLE deployments ADD COLUMN abort_reason TEXT;
ALTER TABLE deployments ADD COLUMN abort_rollback BOOLEAN;
ALTER TABLE deployments ADD COLUMN abort_requested_at BIGINT;

-- The holder hears of it at once (it also looks every poll interval).
CREATE TRIGGER deployments_abort_requested AFTER UPDATE ON deployments
    FOR EACH ROW WHEN (OLD.abort_requested_at IS DISTINCT FROM NEW.abort_requested_at)
    EXECUTE FUNCTION borealis_notify_by_id('deployment');
