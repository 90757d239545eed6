-- A run's end is announced only when someone waits for it (a deployment's
-- step, a long poll on another replica), and by the store after the write
-- rather than by a trigger: an AFTER UPDATE trigger on this table, even one
-- whose WHEN is false, halved the callbacks a replica could take (the
-- benchmark's cluster scenario: about 2 800/s with it, 6 000/s without).
ALTER TABLE webhook_runs ADD COLUMN watched BOOLEAN NOT NULL DEFAULT false;
DROP TRIGGER webhook_runs_changed ON webhook_runs;
