-- Approvals by people: who decided each approval, each person's approval
-- toward a step's requiredApprovals, who asked a deployment to stop, and a
-- team's rule against approving one's own deployment. Nothing stored
-- before names anyone: those read as unknown (NULL), and no team forbids.
ALTER TABLE approvals ADD COLUMN decided_by TEXT;
ALTER TABLE deployments ADD COLUMN abort_requested_by TEXT;
ALTER TABLE teams ADD COLUMN forbid_self_approval INTEGER NOT NULL DEFAULT 0;

-- One row per voter (the actor's kind:id) and approval: a voter counts
-- once. seq is the order they voted in, within the deployment: each vote
-- takes MAX(seq) + 1 in one statement, and writes are serialized.
CREATE TABLE approval_votes (
    deployment_id TEXT NOT NULL,
    step_key      TEXT NOT NULL,
    voter_id      TEXT NOT NULL,
    voter_name    TEXT NOT NULL,
    voted_at      INTEGER NOT NULL,
    seq           INTEGER NOT NULL,
    PRIMARY KEY (deployment_id, step_key, voter_id),
    FOREIGN KEY (deployment_id, step_key) REFERENCES approvals (deployment_id, step_key)
);
CREATE UNIQUE INDEX approval_votes_order ON approval_votes (deployment_id, seq);
