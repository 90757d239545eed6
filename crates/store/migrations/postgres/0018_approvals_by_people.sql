-- Approvals by people: who decided each approval, each person's approval
-- toward a step's requiredApprovals, who asked a deployment to stop, and a
-- team's rule against approving one's own deployment. Nothing stored
-- before names anyone: those read as unknown (NULL), and no team forbids.
-- Constant defaults add the columns without rewriting the tables.
ALTER TABLE approvals ADD COLUMN decided_by TEXT;
ALTER TABLE deployments ADD COLUMN abort_requested_by TEXT;
ALTER TABLE teams ADD COLUMN forbid_self_approval BOOLEAN NOT NULL DEFAULT false;

-- One row per voter (the actor's kind:id) and approval: a voter counts
-- once. seq is the order they voted in: an identity column draws it from a
-- sequence, so replicas voting at once never take the same place.
CREATE TABLE approval_votes (
    deployment_id TEXT COLLATE "C" NOT NULL,
    step_key      TEXT COLLATE "C" NOT NULL,
    voter_id      TEXT COLLATE "C" NOT NULL,
    voter_name    TEXT NOT NULL,
    voted_at      BIGINT NOT NULL,
    seq           BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (deployment_id, step_key, voter_id),
    FOREIGN KEY (deployment_id, step_key) REFERENCES approvals (deployment_id, step_key)
);
CREATE UNIQUE INDEX approval_votes_order ON approval_votes (deployment_id, seq);

-- Other replicas hear of a vote as of any change to the deployment.
CREATE TRIGGER approval_votes_added AFTER INSERT ON approval_votes
    FOR EACH ROW EXECUTE FUNCTION borealis_notify_by_deployment();
