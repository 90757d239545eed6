-- Targets are listed in the order they were first recorded (the file's).
-- An identity column draws that order from a sequence, so replicas adding
-- targets at once never compute the same place (no MAX(position) + 1 race);
-- an upsert of a known target leaves it as it was. No Postgres database
-- predates this version, so there are no rows to number.
ALTER TABLE deployment_targets ADD COLUMN position BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE UNIQUE INDEX deployment_targets_position ON deployment_targets (deployment_id, position);
