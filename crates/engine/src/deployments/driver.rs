//! Rollout drivers. Borealis does not talk to Kubernetes itself: every
//! action goes through a driver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use borealis_core::deployment::{self, Driver, HeaderTemplate, Signing, Target};
use borealis_core::team::AgentRef;
use borealis_core::template::{self, Keyring, RenderLimits, SecretUse, Slot, Values};
use serde_json::json;

use super::caller::Caller;
use crate::outcall::Outcall;

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

/// POSTs each action to the target's URL, direct or through an agent: the
/// action as JSON, or the driver's own body template, with its headers.
pub struct WebhookDriver {
    caller: Arc<Caller>,
    timeout: Duration,
    url: String,
    agent: Option<AgentRef>,
    idempotent: bool,
    signing: Option<Signing>,
    headers: Vec<HeaderTemplate>,
    body_template: Option<String>,
    limits: RenderLimits,
}

/// What a webhook driver's templates read for `action`: the deployment's
/// `armory` values with the action and its weight, the context and
/// artifacts it deploys, and the secrets marked for webhooks in `keyring`.
pub fn values(action: &Action, keyring: &Keyring, signing_default: Option<&str>) -> Values {
    let mut armory = BTreeMap::from([
        ("applicationName".to_owned(), action.application.clone()),
        ("environmentName".to_owned(), action.target.clone()),
        ("deploymentId".to_owned(), action.deployment_id.clone()),
        ("action".to_owned(), action.kind.as_str().to_owned()),
        ("weight".to_owned(), action.weight.map(|w| w.to_string()).unwrap_or_default()),
    ]);
    if let Some(account) = &action.account {
        armory.insert("accountName".into(), account.clone());
    }
    if let Some(namespace) = &action.namespace {
        armory.insert("namespace".into(), namespace.clone());
    }
    let mut values = keyring.values(SecretUse::Webhooks, signing_default, armory, action.context.clone());
    values.artifacts = action.artifacts.clone();
    values
}

/// Header names and values, in order.
pub type Headers = Vec<(String, String)>;

/// The headers and body a webhook driver sends for an action: its header
/// templates rendered, and its body template rendered or else the action's
/// JSON; `content-type: application/json` unless a header says otherwise
/// or the template's body is not JSON. Secrets are masked with `mask`.
pub fn request(
    headers: &[HeaderTemplate],
    body_template: Option<&str>,
    action: &Action,
    values: &Values,
    (mask, limits): (bool, &RenderLimits),
) -> Result<(Headers, String), Vec<String>> {
    let mut errors = Vec::new();
    let mut rendered = Vec::with_capacity(headers.len() + 1);
    for (i, header) in headers.iter().enumerate() {
        match template::render_with(&header.value, Slot::HeaderValue, values, mask, limits) {
            Ok(value) => rendered.push((header.key.clone(), value)),
            Err(err) => errors.push(format!("driver.webhook.headers[{i}].value: {err}")),
        }
    }
    let json = body_template.is_none_or(|b| b.trim_start().starts_with(['{', '[']));
    let body = match body_template {
        None => Some(action.to_json().to_string()),
        Some(text) => template::render_with(text, Slot::Body { json }, values, mask, limits)
            .map_err(|err| errors.push(format!("driver.webhook.bodyTemplate.inline: {err}")))
            .ok(),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    if json && !rendered.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        rendered.insert(0, ("content-type".to_owned(), "application/json".to_owned()));
    }
    Ok((rendered, body.expect("no error")))
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
        let keyring = self.caller.keyring().await.map_err(|err| DriverError {
            detail: format!("the {} driver's secrets cannot be read: {err}", self.name()),
            retryable: true,
        })?;
        let values = values(action, &keyring, self.caller.signing_default());
        let limits = (false, &self.limits);
        let (headers, body) =
            request(&self.headers, self.body_template.as_deref(), action, &values, limits).map_err(|errors| {
                DriverError {
                    detail: format!("the {} driver's request cannot be rendered: {}", self.name(), errors.join("; ")),
                    retryable: false,
                }
            })?;
        let target = ("POST", self.url.as_str());
        let parts = (self.timeout, Caller::ack());
        let sent = match Outcall::from_parts(self.agent.clone(), target, &headers, Some(&body), parts) {
            Ok(call) => self.caller.post(call, &action.id, self.signing.as_ref()).await,
            Err(failure) => Err(failure),
        };
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
pub fn for_target(
    caller: &Arc<Caller>,
    timeout: Duration,
    limits: &RenderLimits,
    target: &Target,
) -> Arc<dyn RolloutDriver> {
    match &target.driver {
        Driver::Record => Arc::new(RecordDriver),
        Driver::Webhook { url, network_mode, agent_identifier, idempotent, signing, headers, body_template } => {
            Arc::new(WebhookDriver {
                caller: caller.clone(),
                timeout,
                url: url.clone(),
                agent: caller
                    .agent(deployment::agent_for(*network_mode, agent_identifier.as_ref(), Some(target)).as_ref()),
                idempotent: *idempotent,
                signing: signing.clone(),
                headers: headers.clone(),
                body_template: body_template.clone(),
                limits: limits.clone(),
            })
        }
    }
}
