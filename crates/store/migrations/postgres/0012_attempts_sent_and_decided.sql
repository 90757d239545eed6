-- The attempt whose request was recorded just before it was sent. A run
-- taken over whose attempt number is later was claimed but never sent.
ALTER TABLE webhook_runs ADD COLUMN request_attempt BIGINT;

-- Runs that ended while an attempt was under way (a callback or a cancel
-- decided them) keep that attempt's lease until it is recorded: by its
-- owner, or by whoever takes the lapsed lease over.
CREATE INDEX webhook_runs_unrecorded ON webhook_runs (lease_until)
    WHERE finished_at IS NOT NULL AND lease_until IS NOT NULL;
