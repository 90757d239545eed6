//! Deployments, their targets, approvals and analysis runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::runs::RunState;

/// Where a deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    Running,
    Succeeded,
    Failed,
    /// Stopped on request (`POST .../abort`).
    Aborted,
}

string_enum!(DeploymentState { Running = "running", Succeeded = "succeeded", Failed = "failed", Aborted = "aborted" });

/// Where one target of a deployment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetState {
    Waiting,
    Running,
    AwaitingApproval,
    AwaitingContinueDecision,
    AwaitingRollbackDecision,
    Deployed,
    /// Deployed, then an `afterDeployment` item failed: kept, dependents cancelled.
    AfterDeploymentFailed,
    RolledBack,
    Cancelled,
    /// Even the rollback failed, or an action could not safely be repeated.
    Failed,
}

string_enum!(TargetState {
    Waiting = "waiting",
    Running = "running",
    AwaitingApproval = "awaiting_approval",
    AwaitingContinueDecision = "awaiting_continue_decision",
    AwaitingRollbackDecision = "awaiting_rollback_decision",
    Deployed = "deployed",
    AfterDeploymentFailed = "after_deployment_failed",
    RolledBack = "rolled_back",
    Cancelled = "cancelled",
    Failed = "failed",
});

/// `POST /api/v1/deployments`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateDeployment {
    /// The deployment file's text (YAML).
    pub file: String,
    /// `{{context.KEY}}` values, over the file's.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// What is deployed, by name (image references, versions), over the
    /// file's `artifacts`: sent with every action to the target's driver.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub artifacts: BTreeMap<String, String>,
    /// Unknown fields in the file are warnings instead of errors (for a
    /// file written for a newer version).
    #[serde(default, rename = "allowUnknownFields", skip_serializing_if = "std::ops::Not::not")]
    pub allow_unknown_fields: bool,
}

/// `GET /api/v1/deployments`: the newest deployments.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentList {
    pub deployments: Vec<DeploymentSummary>,
    /// There may be older ones: pass this as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSummary {
    pub id: String,
    /// The team it belongs to.
    #[serde(default)]
    pub team: String,
    pub application: String,
    pub state: DeploymentState,
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub targets: Vec<TargetSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TargetSummary {
    pub name: String,
    pub state: TargetState,
}

/// A deployment: its targets, their webhook and analysis runs, its history.
/// `warnings` only in the reply that created it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: String,
    /// The team it belongs to.
    #[serde(default)]
    pub team: String,
    pub application: String,
    pub state: DeploymentState,
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// Targets waiting for a manual approval.
    pub pending_approvals: Vec<String>,
    /// Each pending approval's progress toward its `requiredApprovals`.
    #[serde(default)]
    pub approvals: Vec<ApprovalProgress>,
    /// Targets whose analysis step waits for `rollback` or `continue`.
    pub pending_decisions: Vec<String>,
    pub targets: Vec<Target>,
    pub events: Vec<DeploymentEvent>,
    /// Its context values and artifacts, the file's overlaid with the
    /// caller's: what its drivers are told to deploy.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, String>,
    /// Who started it, as the audit trail names them; absent for
    /// deployments from before this was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by: Option<String>,
    /// Someone asked it to stop; it ends `aborted` once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortRequested>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// `POST /api/v1/deployments/{id}/abort`: stop a running deployment. Its
/// pending steps are cancelled, its webhook runs in flight cancelled, and
/// the targets that were deploying rolled back through their driver (left
/// as they are with `rollback: false`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AbortDeployment {
    /// Why, for the history.
    #[serde(default)]
    pub reason: Option<String>,
    /// Roll back the targets that were deploying (the default).
    #[serde(default = "yes")]
    pub rollback: bool,
}

fn yes() -> bool {
    true
}

/// No reason given, and a rollback: what an empty body asks.
impl Default for AbortDeployment {
    fn default() -> Self {
        Self { reason: None, rollback: true }
    }
}

/// An abort that was asked for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortRequested {
    pub reason: String,
    pub rollback: bool,
    #[schema(format = DateTime)]
    pub requested_at: String,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// A pending manual approval and who approved it so far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalProgress {
    pub target: String,
    /// Distinct people, in the order they approved.
    pub approved_by: Vec<String>,
    /// How many it needs (`requiredApprovals`, 1 unless the file says).
    pub required_approvals: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub name: String,
    pub state: TargetState,
    /// What it is doing or waiting for.
    pub step: Option<String>,
    pub reason: Option<String>,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub webhook_runs: Vec<TargetWebhookRun>,
    pub analysis_runs: Vec<JudgmentRun>,
}

/// A webhook run a target's step started (`GET /api/v1/webhook-runs/{id}` has the rest).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetWebhookRun {
    pub id: String,
    pub webhook: String,
    pub state: RunState,
    pub md_message: Option<String>,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeploymentEvent {
    #[schema(format = DateTime)]
    pub at: String,
    pub target: Option<String>,
    pub kind: String,
    pub message: String,
}

/// One judgment run of an analysis step: every query over its window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JudgmentRun {
    /// The run's number, from 1.
    pub run: u32,
    /// `numberOfJudgmentRuns`.
    pub of: u32,
    #[schema(format = DateTime)]
    pub at: String,
    pub window: JudgmentWindow,
    pub provider: String,
    pub queries: Vec<QueryResult>,
    pub passed: bool,
    pub summary: String,
    /// `<target>/<step key>`; set when the API shows the run (not journalled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JudgmentWindow {
    #[schema(format = DateTime)]
    pub start: String,
    #[schema(format = DateTime)]
    pub end: String,
    pub lookback: Lookback,
}

/// `growing` windows start with the analysis; `sliding` ones are one interval long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Lookback {
    Growing,
    Sliding,
}

/// One query of a judgment run: its value and whether it is within limits,
/// or why it has none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueryResult {
    pub query: String,
    pub lower_limit: Option<f64>,
    pub upper_limit: Option<f64>,
    /// The query as sent, placeholders resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The reply to approve, reject, rollback and continue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecisionTaken {
    pub deployment: String,
    pub target: String,
    pub decision: Decision,
    /// An approval counted toward `requiredApprovals` that it does not
    /// reach yet (the reply is `202`): who approved so far.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "approvedBy")]
    pub approved_by: Option<Vec<String>>,
    /// With `approvedBy`: how many distinct people the step needs.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "requiredApprovals")]
    pub required_approvals: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Rejected,
    Continue,
    Rollback,
}

string_enum!(Decision { Approved = "approved", Rejected = "rejected", Continue = "continue", Rollback = "rollback" });
