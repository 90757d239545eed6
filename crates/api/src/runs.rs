//! Webhook runs and the external system's callback.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a webhook run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for its first attempt, or for a retry.
    Pending,
    /// An attempt is under way.
    Calling,
    AwaitingCallback,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

string_enum!(RunState {
    Pending = "pending",
    Calling = "calling",
    AwaitingCallback = "awaiting_callback",
    Succeeded = "succeeded",
    Failed = "failed",
    TimedOut = "timed_out",
    Cancelled = "cancelled",
});

impl RunState {
    pub const UNFINISHED: [RunState; 3] = [RunState::Pending, RunState::Calling, RunState::AwaitingCallback];

    pub fn is_finished(self) -> bool {
        !Self::UNFINISHED.contains(&self)
    }
}

/// How a webhook is called: straight from the relay, or through an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum NetworkMode {
    Direct,
    RemoteNetworkAgent,
}

string_enum!(NetworkMode { Direct = "direct", RemoteNetworkAgent = "remoteNetworkAgent" });

/// `POST /api/v1/webhook-runs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateWebhookRun {
    /// The deployment file's text (YAML).
    pub file: String,
    /// The webhook to run.
    pub name: String,
    /// The target whose account, namespace and context apply.
    #[serde(default)]
    pub environment: Option<String>,
    /// `{{context.KEY}}` values, over the file's.
    #[serde(default)]
    pub context: BTreeMap<String, String>,
    /// Unknown fields in the file are warnings instead of errors (for a
    /// file written for a newer version).
    #[serde(default, rename = "allowUnknownFields", skip_serializing_if = "std::ops::Not::not")]
    pub allow_unknown_fields: bool,
}

/// A webhook run. `attemptLog` and `request` come with one run, not in lists;
/// `warnings` only in the reply that created it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRun {
    pub id: String,
    /// The team it belongs to.
    #[serde(default)]
    pub team: String,
    pub webhook: String,
    pub environment: Option<String>,
    pub state: RunState,
    /// The verdict: the callback's `success`, or a 2xx without callbacks.
    pub success: Option<bool>,
    /// Markdown from the external system.
    pub md_message: Option<String>,
    /// Why the run ended as it did, for operators.
    pub reason: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    pub network_mode: Option<NetworkMode>,
    pub agent: Option<String>,
    /// The deployment whose step started this run; absent for a run
    /// started on its own (and for runs from before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_id: Option<String>,
    /// `{{armory.callbackUri}}`; the external system POSTs to `<callbackUri>/callback`.
    pub callback_uri: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[schema(format = DateTime)]
    pub next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub deadline_at: Option<String>,
    #[schema(format = DateTime)]
    pub callback_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<Attempt>>,
    /// The last request sent, secrets masked; `null` before the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "crate::present")]
    #[schema(value_type = Option<RecordedRequest>)]
    pub request: Option<Option<RecordedRequest>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}

/// One try at calling the webhook.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub number: u32,
    #[schema(format = DateTime)]
    pub started_at: String,
    pub latency_ms: u64,
    /// The destination's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The start of the reply body, secrets masked.
    pub reply: Option<String>,
}

/// A rendered webhook request as recorded, secrets as `********`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RecordedRequest {
    pub method: String,
    pub url: String,
    /// `[name, value]` pairs, in order.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
}

/// `GET /api/v1/webhook-runs`: the newest runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookRunList {
    pub runs: Vec<WebhookRun>,
    /// There may be older ones: pass this as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST <callbackUri>/callback`: the external system's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackRequest {
    pub success: bool,
    /// Markdown shown to operators and written to logs.
    #[serde(default)]
    pub md_message: Option<String>,
}

/// The callback's reply. `repeat` marks a callback that repeats the one
/// that already decided the run.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackAccepted {
    pub run_id: String,
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<bool>,
}
