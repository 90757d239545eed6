//! Dry runs: what a deployment or a webhook run would send, and what would
//! stop it, found without sending anything.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::runs::RecordedRequest;

/// `POST /api/v1/deployments/dry-run` and `POST /api/v1/webhook-runs/dry-run`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// No finding is an error: as far as the relay can tell, it would run.
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<String>,
    /// About the file as a whole (an unknown field let through, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// A deployment's targets, in file order, each with the calls it makes.
    #[serde(default)]
    pub targets: Vec<TargetPlan>,
    /// A webhook run's one call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<PlannedCall>,
}

/// One target of a deployment, and every call it may make.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetPlan {
    pub name: String,
    /// The targets that must be deployed first.
    pub depends_on: Vec<String>,
    /// `record` or `webhook`.
    pub driver: String,
    /// In the order they come: `beforeDeployment`, the driver, the
    /// strategy, Flagger hooks, `afterDeployment`.
    pub calls: Vec<PlannedCall>,
}

/// What one call of a deployment or run would send.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedCall {
    pub kind: CallKind,
    /// The webhook's, hook's or query's name; the driver's type.
    pub name: String,
    /// Where in the file it comes from (`targets.prod.constraints.beforeDeployment[0]`).
    pub at: String,
    /// `direct`, or `agent NAME`.
    pub via: String,
    /// The request as it would be sent, secrets masked. Absent when it
    /// cannot be rendered (a finding says why). Values only known when it
    /// is sent (the callback URI, the time window) are shown as such.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RecordedRequest>,
    /// Everything the relay found about this call, errors first.
    pub findings: Vec<Finding>,
}

/// What kind of call a deployment makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// A `runWebhook` step (or a webhook run).
    Webhook,
    /// An `analysis` step's query to its metric provider.
    Query,
    /// A Flagger-style hook.
    Hook,
    /// The target's `webhook` driver.
    Driver,
}

string_enum!(CallKind { Webhook = "webhook", Query = "query", Hook = "hook", Driver = "driver" });

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The call would fail, or could not be made.
    Error,
    /// It may fail, or the relay cannot tell.
    Warning,
    /// Worth knowing; nothing wrong.
    Info,
}

string_enum!(Severity { Error = "error", Warning = "warning", Info = "info" });

impl Finding {
    pub fn error(message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, message: message.into() }
    }

    pub fn warning(message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, message: message.into() }
    }

    pub fn info(message: impl Into<String>) -> Self {
        Self { severity: Severity::Info, message: message.into() }
    }
}

impl Plan {
    /// Every call of the plan.
    pub fn calls(&self) -> impl Iterator<Item = &PlannedCall> {
        self.targets.iter().flat_map(|t| &t.calls).chain(&self.call)
    }

    /// Sets `ok` from the findings, and sorts each call's errors first.
    pub fn conclude(mut self) -> Self {
        for call in self.targets.iter_mut().flat_map(|t| &mut t.calls).chain(&mut self.call) {
            call.findings.sort_by_key(|f| f.severity);
        }
        let failing = self.calls().flat_map(|c| &c.findings).any(|f| f.severity == Severity::Error);
        self.ok = !failing;
        self
    }
}
