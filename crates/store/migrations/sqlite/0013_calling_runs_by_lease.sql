-- Runs whose attempt is under way, by when their lease lapses: the sweep
-- for lapsed leases reads only these, however many runs the table holds.
CREATE INDEX webhook_runs_calling ON webhook_runs (lease_until) WHERE state = 'calling';
