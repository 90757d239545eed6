-- Whether someone waits for the run's changes (see the PostgreSQL migration
-- of the same version, which announces only those).
ALTER TABLE webhook_runs ADD COLUMN watched INTEGER NOT NULL DEFAULT 0;
