-- Targets are listed in the order they were first recorded (the file's),
-- which until now was only SQLite's rowid. An explicit column says so, and
-- another backend can keep it too. Existing rows keep their rowid order.
ALTER TABLE deployment_targets ADD COLUMN position INTEGER;
UPDATE deployment_targets SET position = (
    SELECT COUNT(*) FROM deployment_targets AS earlier
    WHERE earlier.deployment_id = deployment_targets.deployment_id AND earlier.rowid <= deployment_targets.rowid
);
CREATE UNIQUE INDEX deployment_targets_position ON deployment_targets (deployment_id, position);
