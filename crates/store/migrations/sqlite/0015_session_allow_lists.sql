-- The allow-list each agent instance reported in its Hello (JSON
-- {"rules": [...], "any": bool}), for dry runs on any replica. NULL: the
-- agent did not say.
ALTER TABLE agent_sessions ADD COLUMN allow_list TEXT;
