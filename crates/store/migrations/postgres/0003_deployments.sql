-- Deployments: targets run as a DAG; every completed step is journalled so
-- that a restarted relay resumes where it was and performs no action twice.
CREATE TABLE deployments (
    id          TEXT COLLATE "C" PRIMARY KEY,
    application TEXT NOT NULL,
    file        TEXT NOT NULL,
    context     TEXT NOT NULL,
    state       TEXT NOT NULL,
    reason      TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    finished_at BIGINT
);
-- One deployment per application runs at a time, whichever replica starts it.
CREATE UNIQUE INDEX deployments_one_running ON deployments (application) WHERE finished_at IS NULL;
CREATE INDEX deployments_created ON deployments (created_at);

CREATE TABLE deployment_targets (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    target        TEXT NOT NULL,
    state         TEXT NOT NULL,
    step          TEXT,
    reason        TEXT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, target)
);

-- Step outcomes by key (e.g. "prod/deploy"), for replay after a restart.
CREATE TABLE deployment_journal (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    key           TEXT COLLATE "C" NOT NULL,
    value         TEXT NOT NULL,
    recorded_at   BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, key)
);

-- id: the order events were added in (one writer per deployment, its orchestrator).
CREATE TABLE deployment_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    at            BIGINT NOT NULL,
    target        TEXT,
    kind          TEXT NOT NULL,
    message       TEXT NOT NULL
);
CREATE INDEX deployment_events_by_deployment ON deployment_events (deployment_id, id);

CREATE TABLE approvals (
    deployment_id TEXT NOT NULL REFERENCES deployments (id),
    step_key      TEXT COLLATE "C" NOT NULL,
    target        TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'cancelled')),
    requested_at  BIGINT NOT NULL,
    decided_at    BIGINT,
    PRIMARY KEY (deployment_id, step_key)
);
