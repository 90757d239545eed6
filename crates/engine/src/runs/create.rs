//! Turning a deployment file and a webhook name into a stored run.

use std::collections::BTreeMap;

use base64::Engine;
use borealis_core::deployment::{self, DeploymentFile, NetworkMode, Step, UnknownFields, Webhook};
use borealis_core::render;
use borealis_core::template::SecretUse;
use borealis_store::{Conflict, CredentialKind, IdempotencyKey, NewRun, StoreError};

use super::{RunError, RunSpec, Runs};
use crate::plan::{ASSIGNED_WHEN_SENT, Planner, Preflight};
use borealis_api::Plan;

/// A run to start.
#[derive(Debug)]
pub struct RunRequest {
    /// The team it belongs to: its agents and secrets are that team's.
    pub team: String,
    /// The deployment file's text.
    pub file: String,
    /// The webhook to run.
    pub name: String,
    pub environment: Option<String>,
    pub context: BTreeMap<String, String>,
    /// Set when a deployment step starts the run.
    pub link: Option<RunLink>,
    /// The caller's `Idempotency-Key`.
    pub idempotency: Option<IdempotencyKey>,
    /// Whether an unknown field in the file is an error.
    pub unknown_fields: UnknownFields,
}

/// The deployment step a run belongs to.
#[derive(Debug, Clone)]
pub struct RunLink {
    pub deployment_id: String,
    /// The step's own `runWebhook.context`.
    pub step_context: BTreeMap<String, String>,
    /// What the deployment deploys (`{{artifacts.NAME}}`).
    pub artifacts: BTreeMap<String, String>,
}

pub struct Created {
    pub id: String,
    pub warnings: Vec<String>,
    /// The `Idempotency-Key` named an earlier run, which `id` is.
    pub replayed: bool,
}

fn invalid(detail: impl Into<String>) -> RunError {
    RunError::invalid(detail)
}

fn invalid_lines(heading: &str, lines: Vec<String>) -> RunError {
    RunError::Invalid { detail: format!("{heading}:\n{}", lines.join("\n")), errors: lines }
}

/// The context a run sees: the file's, then the `runWebhook` that names
/// this webhook in the environment's target, then the caller's.
fn context_for(
    file: &DeploymentFile,
    name: &str,
    environment: Option<&str>,
    caller: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut context = file.context.clone();
    let step_context = environment.and_then(|e| file.target(e)).and_then(|target| {
        file.steps_of(target).find_map(|s| match s {
            Step::RunWebhook(run) if run.name == name => Some(&run.context),
            _ => None,
        })
    });
    context.extend(step_context.cloned().unwrap_or_default());
    context.extend(caller.clone());
    context
}

impl Runs {
    /// Checks a run's request, stores the run and schedules its first attempt.
    pub async fn create(&self, request: RunRequest) -> Result<Created, RunError> {
        create(self, request).await
    }

    /// The call `request` would make, rendered and checked; nothing is
    /// sent or stored. A request that names no webhook or target of its
    /// file is refused as [`Runs::create`] refuses it.
    pub async fn plan(&self, request: RunRequest, preflight: &dyn Preflight) -> Result<Plan, RunError> {
        let (file, warnings) = parse(&request)?;
        let settings = &self.settings;
        let limits = &settings.render_limits;
        let default_key = settings.signing_default.as_deref();
        let planner =
            Planner::new(&self.vault, &request.team, default_key, limits, &settings.public_base, preflight).await?;
        let found = resolve(&file, &request, ASSIGNED_WHEN_SENT, &planner.callback_uri())?;
        let at = found.webhook.location.path.clone();
        let call =
            planner.webhook(found.webhook, found.agent, (found.armory, found.context, found.artifacts), at).await;
        Ok(Plan { ok: false, application: file.application.clone(), warnings, targets: Vec::new(), call: Some(call) }
            .conclude())
    }
}

/// The request's file, read, and its warnings.
fn parse(request: &RunRequest) -> Result<(DeploymentFile, Vec<String>), RunError> {
    let parsed = deployment::parse_with(&request.file, request.unknown_fields).map_err(|errors| {
        invalid_lines("the deployment file is invalid", errors.iter().map(|e| e.to_string()).collect())
    })?;
    Ok((parsed.file, parsed.warnings.iter().map(|w| w.to_string()).collect()))
}

async fn create(runs: &Runs, request: RunRequest) -> Result<Created, RunError> {
    let (file, warnings) = parse(&request)?;
    create_parsed(runs, request, file, warnings.clone()).await.map_err(|err| match err {
        // An ignored unknown field may be why: a misspelled key.
        RunError::Invalid { detail, mut errors } if !warnings.is_empty() => {
            let detail = format!("{detail}\n{}", warnings.join("\n"));
            errors.extend(warnings);
            RunError::Invalid { detail, errors }
        }
        other => other,
    })
}

/// What a run request names, found in its file: the webhook, the agent
/// that would call it, and the values its templates read.
pub(crate) struct Resolved<'f> {
    pub webhook: &'f Webhook,
    /// The agent, or why none can be named.
    pub agent: Result<Option<String>, String>,
    pub armory: BTreeMap<String, String>,
    pub context: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, String>,
}

/// Finds what `request` names in `file`; `id` and `callback_uri` are the
/// run's, or stand-ins where none is made.
pub(crate) fn resolve<'f>(
    file: &'f DeploymentFile,
    request: &RunRequest,
    id: &str,
    callback_uri: &str,
) -> Result<Resolved<'f>, RunError> {
    let Some(webhook) = file.webhook(&request.name) else {
        let names: Vec<&str> = file.webhooks.iter().map(|w| w.name.as_str()).collect();
        return Err(invalid(format!(
            "no webhook named {:?} in the file (defined: {})",
            request.name,
            names.join(", ")
        )));
    };
    let target = match &request.environment {
        Some(env) => Some(file.target(env).ok_or_else(|| {
            let names: Vec<&str> = file.targets.iter().map(|t| t.name.as_str()).collect();
            invalid(format!("no target named {env:?} in the file (targets: {})", names.join(", ")))
        })?),
        None => None,
    };
    let agent = match deployment::agent_for(webhook.network_mode, webhook.agent_identifier.as_ref(), target) {
        None if webhook.network_mode == NetworkMode::RemoteNetworkAgent => Err(format!(
            "webhook {:?} uses remoteNetworkAgent with no agentIdentifier; give --environment with a target that has an account",
            webhook.name
        )),
        agent => Ok(agent),
    };
    let mut armory = BTreeMap::from([
        ("callbackUri".to_owned(), callback_uri.to_owned()),
        ("deploymentId".to_owned(), id.to_owned()),
    ]);
    let mut put = |key: &str, value: Option<&String>| {
        if let Some(value) = value {
            armory.insert(key.to_owned(), value.clone());
        }
    };
    put("applicationName", file.application.as_ref());
    put("environmentName", request.environment.as_ref());
    put("accountName", target.and_then(|t| t.account.as_ref()));
    put("namespace", target.and_then(|t| t.namespace.as_ref()));
    let context = match &request.link {
        // A deployment step: the file's context, the step's, then the deployment's.
        Some(link) => {
            let mut context = file.context.clone();
            context.extend(link.step_context.clone());
            context.extend(request.context.clone());
            context
        }
        None => context_for(file, &webhook.name, request.environment.as_deref(), &request.context),
    };
    let artifacts = request.link.as_ref().map(|link| link.artifacts.clone()).unwrap_or_default();
    Ok(Resolved { webhook, agent, armory, context, artifacts })
}

async fn create_parsed(
    runs: &Runs,
    request: RunRequest,
    file: DeploymentFile,
    warnings: Vec<String>,
) -> Result<Created, RunError> {
    let id = uuid::Uuid::new_v4().to_string();
    let callback_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(borealis_core::secret::random_bytes(18));
    let callback_uri = format!("{}/callbacks/{callback_id}", runs.settings.public_base.trim_end_matches('/'));
    let Resolved { webhook, agent, armory, context, artifacts } = resolve(&file, &request, &id, &callback_uri)?;
    let webhook = webhook.clone();
    let agent = agent.map_err(invalid)?;
    if let Some(agent) = &agent {
        // Another team's agent of that name is not this run's, and whether
        // one exists there is none of its business.
        let registered = runs.agents.active_credential(CredentialKind::Agent, &request.team, agent).await?;
        if registered.is_none() {
            return Err(invalid(format!(
                "agent {agent:?} is not registered in team {:?} (borealis agents create {agent} --team {})",
                request.team, request.team
            )));
        }
    }

    // Render once now, so that bad input is refused before anything is sent:
    // with only the secrets marked for webhooks, never the relay's own key.
    let secrets = runs.vault.keyring(&request.team).await?;
    let default_key = runs.settings.signing_default.as_deref();
    let mut values = secrets.values(SecretUse::Webhooks, default_key, armory.clone(), context.clone());
    values.artifacts = artifacts.clone();
    if let Err(errors) = render::render_webhook_with(&webhook, &values, false, &runs.settings.render_limits) {
        return Err(invalid_lines("the webhook cannot be rendered", errors.iter().map(|e| e.to_string()).collect()));
    }
    if let Err(reason) = crate::signing::keys(default_key, webhook.signing.as_ref(), &secrets) {
        return Err(invalid(format!("the webhook cannot be signed: {reason}")));
    }

    let deployment_id = request.link.as_ref().map(|link| link.deployment_id.clone());
    let spec = RunSpec { webhook, armory, context, artifacts, deployment_id, agent };
    let run = NewRun {
        id: id.clone(),
        team: request.team.clone(),
        callback_id,
        webhook: request.name,
        environment: request.environment,
        spec: serde_json::to_string(&spec).expect("the spec serializes"),
        idempotency: request.idempotency,
    };
    let watched = request.link.is_some();
    match runs.store.insert_run(&run).await {
        // A deployment's step waits for it, maybe on another replica.
        Ok(()) if watched => runs.store.watch_run(&id).await?,
        Ok(()) => {}
        Err(StoreError::Conflict(Conflict::IdempotencyKeyUsed { id, same_request: true })) => {
            return Ok(Created { id, warnings, replayed: true });
        }
        Err(StoreError::Conflict(Conflict::IdempotencyKeyUsed { id, .. })) => {
            return Err(RunError::IdempotencyKeyReused { id });
        }
        Err(err) => return Err(err.into()),
    }
    runs.metrics.runs_started.inc();
    runs.attempt_now(&id);
    Ok(Created { id, warnings, replayed: false })
}
