//! Dry runs: each call a deployment or a webhook run would make, rendered
//! as it would be sent (secrets masked), with what would stop it. Nothing
//! is sent and nothing is stored.
//!
//! The engine renders and signs; what it cannot know itself (whether an
//! agent is registered and connected, what its allow-list lets through,
//! what the relay's own address guard refuses) it asks a [`Preflight`],
//! which the relay implements.

use std::collections::BTreeMap;
use std::sync::Arc;

use borealis_api::{CallKind, Finding, PlannedCall, RecordedRequest};
use borealis_core::deployment::Webhook;
use borealis_core::render;
use borealis_core::scrub::Scrubber;
use borealis_core::team::AgentRef;
use borealis_core::template::{Keyring, RenderLimits, SecretUse};

use crate::vault::{Vault, VaultError};

/// What the relay can tell of a call's way out without sending it.
#[async_trait::async_trait]
pub trait Preflight: Send + Sync {
    /// Findings on a call to `url` through `agent` (direct when `None`):
    /// whether the agent is registered and connected and its allow-list
    /// lets the destination through, or whether the relay's guard does.
    /// Without a URL (it could not be rendered), only the agent is checked.
    async fn check(&self, agent: Option<&AgentRef>, url: Option<&str>) -> Vec<Finding>;
}

/// What is only known when a call is made, shown in its place.
pub const ASSIGNED_WHEN_SENT: &str = "(assigned-when-sent)";

/// Where calls are planned from: the team's secrets as stored now, and the
/// settings that shape each call.
pub struct Planner<'a> {
    /// Whose agents and secrets the calls use.
    team: &'a str,
    pub(crate) secrets: Keyring,
    scrubber: Arc<Scrubber>,
    /// The relay's own signing key, which no template may read.
    pub(crate) signing_default: Option<&'a str>,
    pub(crate) limits: &'a RenderLimits,
    public_base: &'a str,
    preflight: &'a dyn Preflight,
}

impl<'a> Planner<'a> {
    pub async fn new(
        vault: &Vault,
        team: &'a str,
        signing_default: Option<&'a str>,
        limits: &'a RenderLimits,
        public_base: &'a str,
        preflight: &'a dyn Preflight,
    ) -> Result<Self, VaultError> {
        let secrets = vault.keyring(team).await?;
        let scrubber = vault.current_scrubber().await?;
        Ok(Self { team, secrets, scrubber, signing_default, limits, public_base, preflight })
    }

    pub fn team(&self) -> &str {
        self.team
    }

    /// A callback URI as a run's would read, its id not yet drawn.
    pub fn callback_uri(&self) -> String {
        format!("{}/callbacks/{ASSIGNED_WHEN_SENT}", self.public_base.trim_end_matches('/'))
    }

    pub(crate) fn scrub(&self, text: &str) -> String {
        self.scrubber.scrub(text).into_owned()
    }

    /// The webhook's call with these values, through `agent` (or why no
    /// agent can be named).
    pub async fn webhook(
        &self,
        webhook: &Webhook,
        agent: Result<Option<String>, String>,
        (armory, context, artifacts): (BTreeMap<String, String>, BTreeMap<String, String>, BTreeMap<String, String>),
        at: String,
    ) -> PlannedCall {
        let mut findings = Vec::new();
        let mut values = self.secrets.values(SecretUse::Webhooks, self.signing_default, armory, context);
        values.artifacts = artifacts;
        let request = match render::render_webhook_with(webhook, &values, false, self.limits) {
            Ok(rendered) => Some(rendered),
            Err(errors) => {
                findings.extend(errors.iter().map(|e| Finding::error(format!("cannot be rendered: {e}"))));
                None
            }
        };
        self.check_signing(webhook.signing.as_ref(), &mut findings);
        if webhook.disable_callback {
            findings.push(Finding::info("disableCallback: the reply's status decides, no callback is awaited"));
        }
        let shown =
            render::render_webhook_with(webhook, &values, true, self.limits).ok().map(|masked| RecordedRequest {
                method: masked.method,
                url: self.scrub(&masked.url),
                headers: masked.headers.iter().map(|(k, v)| (k.clone(), self.scrub(v))).collect(),
                body: masked.body.as_deref().map(|b| self.scrub(b)),
            });
        let url = request.map(|r| r.url);
        self.finish(CallKind::Webhook, webhook.name.clone(), at, agent, url, shown, findings).await
    }

    pub(crate) fn check_signing(
        &self,
        signing: Option<&borealis_core::deployment::Signing>,
        findings: &mut Vec<Finding>,
    ) {
        if let Err(reason) = crate::signing::keys(self.signing_default, signing, &self.secrets) {
            findings.push(Finding::error(format!("cannot be signed: {reason}")));
        }
    }

    /// The call, with what the relay says of its way out.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn finish(
        &self,
        kind: CallKind,
        name: String,
        at: String,
        agent: Result<Option<String>, String>,
        url: Option<String>,
        request: Option<RecordedRequest>,
        mut findings: Vec<Finding>,
    ) -> PlannedCall {
        let via = match &agent {
            Ok(Some(agent)) => format!("agent {agent}"),
            Ok(None) => "direct".to_owned(),
            Err(_) => "-".to_owned(),
        };
        match agent {
            Err(why) => findings.push(Finding::error(why)),
            Ok(agent) => {
                let agent = agent.map(|name| AgentRef::new(self.team, name));
                let found = self.preflight.check(agent.as_ref(), url.as_deref()).await;
                findings.extend(found.into_iter().map(|f| Finding { message: self.scrub(&f.message), ..f }));
            }
        }
        PlannedCall { kind, name, at, via, request, findings }
    }
}
