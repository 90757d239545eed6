//! Rollout drivers. Borealis does not talk to Kubernetes itself: every
//! action goes through a driver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use borealis_core::deployment::{Driver, NetworkMode, Signing, Target};
use serde_json::json;

use super::caller::Caller;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Deploy,
    SetWeight,
    RedirectTraffic,
    Promote,
    Rollback,
    Cancel,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Deploy => "deploy",
            ActionKind::SetWeight => "setWeight",
            ActionKind::RedirectTraffic => "redirectTraffic",
            ActionKind::Promote => "promote",
            ActionKind::Rollback => "rollback",
            ActionKind::Cancel => "cancel",
        }
    }
}

/// One action on one target.
#[derive(Debug, Clone)]
pub struct Action {
    /// The action's `webhook-id`: `<deployment id>:<its journal key>`, so a
    /// repeat after a restart carries the same id.
    pub id: String,
    pub deployment_id: String,
    pub application: String,
    pub target: String,
    pub account: Option<String>,
    pub namespace: Option<String>,
    pub kind: ActionKind,
    pub weight: Option<u32>,
    /// The deployment's context values and artifacts: what to deploy.
    pub context: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, String>,
}

impl Action {
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "deploymentId": self.deployment_id,
            "application": self.application,
            "target": self.target,
            "account": self.account,
            "namespace": self.namespace,
            "action": self.kind.as_str(),
            "weight": self.weight,
            "context": self.context,
            "artifacts": self.artifacts,
        })
    }
}

/// Carries out rollout actions.
#[async_trait::async_trait]
pub trait RolloutDriver: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether repeating an action is harmless, so that one cut off by a
    /// restart may be performed again.
    fn idempotent(&self) -> bool;
    async fn act(&self, action: &Action) -> Result<(), DriverError>;
}

/// An action the driver could not carry out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct DriverError {
    pub detail: String,
    /// Whether the same action may succeed if tried again.
    pub retryable: bool,
}

/// Records actions in the deployment's history (which the orchestrator
/// does for every driver) and nothing else.
pub struct RecordDriver;

#[async_trait::async_trait]
impl RolloutDriver for RecordDriver {
    fn name(&self) -> &'static str {
        "record"
    }

    fn idempotent(&self) -> bool {
        true
    }

    async fn act(&self, _action: &Action) -> Result<(), DriverError> {
        Ok(())
    }
}

/// POSTs each action as JSON to the target's URL, direct or through an agent.
pub struct WebhookDriver {
    caller: Arc<Caller>,
    timeout: Duration,
    url: String,
    agent: Option<String>,
    idempotent: bool,
    signing: Option<Signing>,
}

#[async_trait::async_trait]
impl RolloutDriver for WebhookDriver {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn idempotent(&self) -> bool {
        self.idempotent
    }

    async fn act(&self, action: &Action) -> Result<(), DriverError> {
        let signing = self.signing.as_ref();
        let sent = self
            .caller
            .post_json(self.agent.as_deref(), &self.url, &action.to_json(), self.timeout, &action.id, signing)
            .await;
        match sent {
            Ok(status) if (200..300).contains(&status) => Ok(()),
            Ok(status) => Err(DriverError {
                detail: format!("the {} driver at {} answered HTTP {status}", self.name(), self.url),
                retryable: status == 408 || status == 429 || status >= 500,
            }),
            Err(err) => Err(DriverError {
                detail: format!("the {} driver at {} could not be reached: {}", self.name(), self.url, err.detail),
                retryable: err.retryable,
            }),
        }
    }
}

/// The driver a target names (record by default).
pub fn for_target(caller: &Arc<Caller>, timeout: Duration, target: &Target) -> Arc<dyn RolloutDriver> {
    match &target.driver {
        Driver::Record => Arc::new(RecordDriver),
        Driver::Webhook { url, network_mode, agent_identifier, idempotent, signing } => Arc::new(WebhookDriver {
            caller: caller.clone(),
            timeout,
            url: url.clone(),
            agent: match network_mode {
                NetworkMode::Direct => None,
                NetworkMode::RemoteNetworkAgent => agent_identifier.clone().or_else(|| target.account.clone()),
            },
            idempotent: *idempotent,
            signing: signing.clone(),
        }),
    }
}
