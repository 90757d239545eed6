-- Where each secret may be used: a comma-separated set of webhooks, signing
-- and providers. Secrets stored before are for webhooks, as they were read.
ALTER TABLE secrets ADD COLUMN uses TEXT NOT NULL DEFAULT 'webhooks';
