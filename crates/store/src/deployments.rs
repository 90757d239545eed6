//! Deployments and what belongs to them: targets, the step journal,
//! approvals and events. They are one aggregate: a deployment's view reads
//! them all at once.

use std::time::SystemTime;

use crate::error::StoreError;
use crate::idempotency::IdempotencyKey;
use crate::runs::{Claim, RunRecord};
use crate::time::serialize_time;

/// The step-key suffix of an analysis step's rollback-or-continue decision,
/// kept in the approvals table: `approved` continues, `rejected` rolls back.
pub const DECISION_SUFFIX: &str = "/decision";

/// Where a deployment and its targets stand: the API's vocabulary, stored as its text.
pub use borealis_api::{DeploymentState, TargetState};

/// An approval a pause waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalState {
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Rejected => "rejected",
            ApprovalState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Self {
        match text {
            "approved" => ApprovalState::Approved,
            "rejected" => ApprovalState::Rejected,
            "cancelled" => ApprovalState::Cancelled,
            _ => ApprovalState::Pending,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeploymentRecord {
    pub id: String,
    /// The team it belongs to: its agents, secrets and providers are that team's.
    pub team: String,
    pub application: String,
    /// The deployment file's text.
    pub file: String,
    /// JSON object of the caller's context.
    pub context: String,
    pub state: DeploymentState,
    pub reason: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub finished_at: Option<SystemTime>,
    /// Someone asked for it to stop where it is.
    pub abort: Option<AbortRequest>,
}

/// A request to stop a running deployment: from any replica, carried out by
/// the one holding its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbortRequest {
    pub reason: String,
    /// Whether targets that were deploying are rolled back (else left as
    /// they are).
    pub rollback: bool,
    pub requested_at: SystemTime,
    /// Who asked, as actors are shown; `None` for one asked before this was kept.
    pub requested_by: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TargetRecord {
    pub target: String,
    pub state: TargetState,
    pub step: Option<String>,
    pub reason: Option<String>,
    #[serde(serialize_with = "serialize_time")]
    pub updated_at: SystemTime,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EventRecord {
    #[serde(serialize_with = "serialize_time")]
    pub at: SystemTime,
    pub target: Option<String>,
    pub kind: String,
    pub message: String,
}

/// A replica's hold on a deployment's run, from its creation.
#[derive(Debug, Clone, Copy)]
pub struct DeploymentLease<'a> {
    pub owner: &'a str,
    pub until: SystemTime,
}

/// One person's (or service account's) approval, toward a step's
/// `requiredApprovals`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voter {
    /// The actor's `kind:id`: what makes two approvals one person's.
    pub id: String,
    /// As actors are shown.
    pub name: String,
}

/// A deployment as of one moment: nothing in it is older or newer than the rest.
#[derive(Debug, Clone)]
pub struct DeploymentView {
    pub record: DeploymentRecord,
    /// In the order they were first recorded (the file's: the relay records
    /// every target when it creates the deployment).
    pub targets: Vec<TargetRecord>,
    /// Step keys and their values, by key.
    pub journal: Vec<(String, String)>,
    /// The webhook runs the journal names, in no particular order.
    pub runs: Vec<RunRecord>,
    /// Targets and step keys, by step key.
    pub pending_approvals: Vec<(String, String)>,
    /// Who approved the pending approvals so far: step keys and voters, in
    /// the order they approved.
    pub approval_votes: Vec<(String, Voter)>,
    /// In the order they were added.
    pub events: Vec<EventRecord>,
}

/// A fenced write's outcome for deployment `id`: `Conflict::LeaseLost`
/// unless the fence `held`.
pub(crate) fn fenced(id: &str, held: bool) -> Result<(), StoreError> {
    if held { Ok(()) } else { Err(crate::Conflict::LeaseLost { what: format!("deployment {id}") }.into()) }
}

#[async_trait::async_trait]
pub trait DeploymentStore: Send + Sync + 'static {
    /// Stores a running deployment of `team`. Fails with
    /// [`Conflict::DeploymentInProgress`] naming the deployment already
    /// running for the application in that team, and with
    /// [`Conflict::IdempotencyKeyUsed`] when the team used the key before.
    ///
    /// [`Conflict::DeploymentInProgress`]: crate::Conflict::DeploymentInProgress
    /// [`Conflict::IdempotencyKeyUsed`]: crate::Conflict::IdempotencyKeyUsed
    // Each argument is a part of the new row.
    #[allow(clippy::too_many_arguments)]
    async fn insert_deployment(
        &self,
        id: &str,
        team: &str,
        application: &str,
        file: &str,
        context: &str,
        idempotency: Option<&IdempotencyKey>,
        lease: &DeploymentLease<'_>,
    ) -> Result<(), StoreError>;
    /// Claims unfinished deployments whose lease ran out before
    /// `claim.now` (their replica died or stopped): leased to `claim.owner`
    /// until `claim.lease_until`, at most `claim.limit`. Of replicas
    /// claiming at once, one gets each. Returns their ids.
    async fn claim_deployments(&self, claim: &Claim<'_>) -> Result<Vec<String>, StoreError>;
    /// Extends the leases `owner` holds on unfinished deployments; returns
    /// the ids it still holds.
    async fn renew_deployment_leases(&self, owner: &str, lease_until: SystemTime) -> Result<Vec<String>, StoreError>;
    /// Lets go of every deployment `owner` holds, so another replica can
    /// take them over at once (a replica stopping in order).
    async fn release_deployments(&self, owner: &str) -> Result<(), StoreError>;
    async fn deployment(&self, id: &str) -> Result<Option<DeploymentRecord>, StoreError>;
    /// The newest deployments (by creation time, then id) with their
    /// targets, read as one snapshot.
    async fn deployments(&self, limit: u32) -> Result<Vec<(DeploymentRecord, Vec<TargetRecord>)>, StoreError> {
        self.deployments_page(&crate::Page::first(limit)).await
    }
    /// One page of deployments, newest first, with their targets, read as
    /// one snapshot; `page.name` is the application.
    async fn deployments_page(
        &self,
        page: &crate::Page,
    ) -> Result<Vec<(DeploymentRecord, Vec<TargetRecord>)>, StoreError>;
    async fn unfinished_deployments(&self) -> Result<Vec<DeploymentRecord>, StoreError>;

    /// Asks deployment `id` to stop, unless it has ended or was asked
    /// already (the first request stands). Any replica may ask; returns the
    /// deployment as it now stands, `None` when there is none. The replica
    /// holding its lease hears of it as of any change to the deployment.
    async fn request_abort(
        &self,
        id: &str,
        reason: &str,
        rollback: bool,
        by: &str,
    ) -> Result<Option<DeploymentRecord>, StoreError>;
    /// Ends a deployment in `state`, by the replica holding its lease; one
    /// already finished keeps its end. Fails with [`Conflict::LeaseLost`]
    /// when `owner` no longer holds it.
    ///
    /// [`Conflict::LeaseLost`]: crate::Conflict::LeaseLost
    async fn finish_deployment(
        &self,
        id: &str,
        owner: &str,
        state: DeploymentState,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;
    // The writes below are the lease owner's: each is fenced on the lease
    // (`owner` holds it, and the deployment is unfinished), and fails with
    // `Conflict::LeaseLost` when `owner` lost it, writing nothing.

    /// Creates or updates a target. A new target goes after the ones
    /// recorded before it; an update keeps its place.
    async fn set_target(
        &self,
        id: &str,
        owner: &str,
        target: &str,
        state: TargetState,
        step: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), StoreError>;
    /// A deployment and everything shown with it, read as one snapshot:
    /// every backend must read it all in one read transaction that sees one
    /// commit, so no write lands between two parts of the view.
    async fn deployment_view(&self, id: &str) -> Result<Option<DeploymentView>, StoreError>;
    /// In the order of [`DeploymentView::targets`].
    async fn targets(&self, id: &str) -> Result<Vec<TargetRecord>, StoreError>;
    /// By key.
    async fn journal(&self, id: &str) -> Result<Vec<(String, String)>, StoreError>;
    /// Records a step's value; a key already recorded keeps its first value.
    async fn put_journal(&self, id: &str, key: &str, value: &str) -> Result<(), StoreError>;
    /// Overwrites a step's value (a step moving from started to done), by
    /// the replica holding the deployment's lease: a compare-and-set on the
    /// lease, failing with [`Conflict::LeaseLost`] when `owner` lost it.
    ///
    /// [`Conflict::LeaseLost`]: crate::Conflict::LeaseLost
    async fn replace_journal(&self, id: &str, owner: &str, key: &str, value: &str) -> Result<(), StoreError>;
    async fn add_event(
        &self,
        id: &str,
        owner: &str,
        target: Option<&str>,
        kind: &str,
        message: &str,
    ) -> Result<(), StoreError>;
    /// Opens an approval (once; a replay finds it as it is).
    async fn request_approval(
        &self,
        id: &str,
        owner: &str,
        target: &str,
        step_key: &str,
    ) -> Result<ApprovalState, StoreError>;
    async fn approval(&self, id: &str, step_key: &str) -> Result<Option<ApprovalState>, StoreError>;
    /// Decides the pending approvals of `target`, as `by` (an actor's name).
    /// Returns how many there were. With `decisions`, only the
    /// rollback-or-continue decisions of analysis steps (step keys ending in
    /// [`DECISION_SUFFIX`]); without, only the rest.
    async fn decide_approvals(
        &self,
        id: &str,
        target: &str,
        decision: ApprovalState,
        decisions: bool,
        by: &str,
    ) -> Result<u64, StoreError>;
    /// Who decided approval `step_key` (the last of its approvers, or who
    /// rejected it); `None` while pending, or for one decided before this was kept.
    async fn approval_decided_by(&self, id: &str, step_key: &str) -> Result<Option<String>, StoreError>;
    /// Counts `voter`'s approval of `step_key` while it is pending; a voter
    /// counts once, however often it approves. Returns every voter so far,
    /// in the order they approved.
    async fn vote_approval(&self, id: &str, step_key: &str, voter: &Voter) -> Result<Vec<Voter>, StoreError>;
    /// Marks one approval cancelled if it is still pending.
    async fn cancel_approval(&self, id: &str, owner: &str, step_key: &str) -> Result<(), StoreError>;
    /// Cancels webhook run `run_id`, a step of deployment `id`, if it is
    /// unfinished. True when it changed.
    async fn cancel_step_run(&self, id: &str, owner: &str, run_id: &str, reason: &str) -> Result<bool, StoreError>;
}
