-- Metric providers that analysis steps query (issue 15). Header values are
-- templates (`Bearer {{secrets.prom_token}}`), never secret values.
CREATE TABLE metric_providers (
    name       TEXT COLLATE "C" PRIMARY KEY,
    kind       TEXT NOT NULL,
    url        TEXT NOT NULL,
    agent      TEXT,
    headers    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
