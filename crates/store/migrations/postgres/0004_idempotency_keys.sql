-- The Idempotency-Key a client sent with the POST that created the row, and
-- a hash of that request: a repeat gets the same row back, and the same key
-- with a different request is refused. The unique index is also what
-- `INSERT ... ON CONFLICT` claims the key on, so replicas racing one key
-- make one row.
ALTER TABLE webhook_runs ADD COLUMN idempotency_key TEXT;
ALTER TABLE webhook_runs ADD COLUMN request_hash TEXT;
CREATE UNIQUE INDEX webhook_runs_idempotency ON webhook_runs (idempotency_key) WHERE idempotency_key IS NOT NULL;
ALTER TABLE deployments ADD COLUMN idempotency_key TEXT;
ALTER TABLE deployments ADD COLUMN request_hash TEXT;
CREATE UNIQUE INDEX deployments_idempotency ON deployments (idempotency_key) WHERE idempotency_key IS NOT NULL;
