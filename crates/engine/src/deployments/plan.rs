//! A deployment's dry run: every target's calls in the order they come,
//! each as [`Planner`] renders and checks it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use borealis_api::{CallKind, Finding, Plan, PlannedCall, RecordedRequest, TargetPlan};
use borealis_core::deployment::{
    Analysis, DeploymentFile, Driver, FlaggerHook, NetworkMode, Step, Target, UnknownFields,
};
use borealis_core::template::{self, SecretUse, Slot, Values};
use borealis_store::MetricProvider;

use super::DeploymentError;
use super::driver::{self, Action, ActionKind};
use super::inputs::Inputs;
use super::providers::{self, Window, window_values};
use crate::plan::{ASSIGNED_WHEN_SENT, Planner, Preflight};
use crate::runs::create::{RunLink, RunRequest, resolve};

impl Planner<'_> {
    /// A Flagger hook's call, with the payload it gets for `target`.
    pub async fn hook(&self, hook: &FlaggerHook, target: &Target, application: &str) -> PlannedCall {
        let mut findings = Vec::new();
        self.check_signing(hook.signing.as_ref(), &mut findings);
        let payload = super::hooks::payload(application, target, hook.kind.as_str(), "", hook);
        let agent = agent_of(hook.network_mode, hook.agent_identifier.as_ref(), target, &mut findings);
        let shown = json_post(&hook.url, &payload);
        let name = format!("{} ({})", hook.name, hook.kind.as_str());
        self.finish(CallKind::Hook, name, hook.location.path.clone(), agent, Some(hook.url.clone()), shown, findings)
            .await
    }

    /// The target's webhook driver's first action, as it would be posted.
    pub async fn driver(&self, target: &Target, driver: &Driver, action: &Action) -> Option<PlannedCall> {
        let Driver::Webhook { url, network_mode, agent_identifier, signing, headers, body_template, .. } = driver
        else {
            return None;
        };
        let mut findings = Vec::new();
        self.check_signing(signing.as_ref(), &mut findings);
        let agent = agent_of(*network_mode, agent_identifier.as_ref(), target, &mut findings);
        let values = driver::values(action, &self.secrets, self.signing_default);
        let body_template = body_template.as_deref();
        if let Err(errors) = driver::request(headers, body_template, action, &values, (false, self.limits)) {
            findings.extend(errors.into_iter().map(|e| Finding::error(format!("cannot be rendered: {e}"))));
        }
        let shown = driver::request(headers, body_template, action, &values, (true, self.limits)).ok().map(
            |(headers, body)| RecordedRequest {
                method: "POST".into(),
                url: url.clone(),
                headers: headers.iter().map(|(k, v)| (k.clone(), self.scrub(v))).collect(),
                body: Some(self.scrub(&body)),
            },
        );
        let at = format!("{}.driver", target.location.path);
        Some(self.finish(CallKind::Driver, "webhook".into(), at, agent, Some(url.clone()), shown, findings).await)
    }

    /// An analysis step's queries of its provider, as a judgment run
    /// starting now would make them; or why there is no provider.
    pub async fn queries(
        &self,
        file: &DeploymentFile,
        analysis: &Analysis,
        providers: &[MetricProvider],
        target: &Target,
        (context, artifacts): (&BTreeMap<String, String>, &BTreeMap<String, String>),
    ) -> Vec<PlannedCall> {
        let at = analysis.location.path.clone();
        let Some(name) = file.provider_of(analysis) else { return Vec::new() };
        let Some(provider) = providers.iter().find(|p| p.name == name.name) else {
            let defined: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
            let defined = if defined.is_empty() { "none is defined".into() } else { defined.join(", ") };
            let finding = Finding::error(format!(
                "unknown metric provider {:?} ({defined}; create it with borealis providers create)",
                name.name
            ));
            let via = "-".to_owned();
            return vec![PlannedCall {
                kind: CallKind::Query,
                name: name.name.clone(),
                at,
                via,
                request: None,
                findings: vec![finding],
            }];
        };
        let now = SystemTime::now();
        let window = Window {
            start: now,
            end: now + Duration::from_secs(analysis.interval_seconds),
            interval_seconds: analysis.interval_seconds,
        };
        let application = file.application.as_deref().unwrap_or_default();
        let values = Values {
            armory: window_values(application, ASSIGNED_WHEN_SENT, target, &window),
            context: context.iter().chain(&analysis.context).map(|(k, v)| (k.clone(), v.clone())).collect(),
            artifacts: artifacts.clone(),
            ..Values::default()
        };
        let header_values =
            self.secrets.values(SecretUse::Providers, self.signing_default, BTreeMap::new(), BTreeMap::new());
        let mut calls = Vec::new();
        for name in &analysis.queries {
            let Some(query) = file.query(&name.name) else { continue };
            let mut findings = vec![Finding::info(format!(
                "asked {} times, every {}s; the window shown is one starting now",
                analysis.number_of_judgment_runs, analysis.interval_seconds
            ))];
            let rendered = template::render(&query.query_template, Slot::Query, &values, false)
                .map_err(|e| findings.push(Finding::error(format!("the query cannot be rendered: {e}"))))
                .ok();
            let request = rendered.and_then(|text| {
                providers::request(provider, &text, now, &header_values, true)
                    .map_err(|e| findings.push(Finding::error(e)))
                    .ok()
            });
            if let Err(e) = providers::request(provider, "up", now, &header_values, false) {
                findings.push(Finding::error(e));
            }
            let url = request.as_ref().map(|(url, _)| url.to_string());
            let shown = request.map(|(url, headers)| RecordedRequest {
                method: "GET".into(),
                url: self.scrub(url.as_str()),
                headers: headers.iter().map(|(k, v)| (k.clone(), self.scrub(v))).collect(),
                body: None,
            });
            let agent = Ok(provider.agent.clone());
            let call_name = format!("{} (provider {})", query.name, provider.name);
            calls.push(self.finish(CallKind::Query, call_name, at.clone(), agent, url, shown, findings).await);
        }
        calls
    }
}

/// The agent a hook's or driver's call goes through, as they pick it: its
/// own, else the target's account, else none (the call goes direct).
fn agent_of(
    mode: NetworkMode,
    identifier: Option<&String>,
    target: &Target,
    findings: &mut Vec<Finding>,
) -> Result<Option<String>, String> {
    let agent = borealis_core::deployment::agent_for(mode, identifier, Some(target));
    if mode == NetworkMode::RemoteNetworkAgent && agent.is_none() {
        findings.push(Finding::warning(
            "remoteNetworkAgent with no agentIdentifier, and the target has no account: it is called direct",
        ));
    }
    Ok(agent)
}

fn json_post(url: &str, payload: &serde_json::Value) -> Option<RecordedRequest> {
    Some(RecordedRequest {
        method: "POST".into(),
        url: url.to_owned(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Some(payload.to_string()),
    })
}

impl super::Deployments {
    /// What deployment file `text` would do with `inputs`: each target's
    /// calls in order, rendered and checked; nothing is sent or stored. A
    /// file that cannot run at all is refused as [`super::Deployments::create`]
    /// refuses it; what only shows in a call (a missing secret, provider or
    /// agent, a refused destination) is a finding of that call.
    pub async fn plan(
        &self,
        team: &str,
        text: &str,
        inputs: &Inputs,
        unknown: UnknownFields,
        preflight: &dyn Preflight,
    ) -> Result<Plan, DeploymentError> {
        let super::ReadFile { file, warnings, mut errors } = super::read_file(text, inputs, unknown)?;
        if !errors.is_empty() {
            errors.extend(warnings);
            return Err(super::invalid("the deployment cannot run", errors));
        }
        let settings = self.context.runs.settings();
        let planner = Planner::new(
            self.context.caller.vault(),
            team,
            settings.signing_default.as_deref(),
            &settings.render_limits,
            &settings.public_base,
            preflight,
        )
        .await?;
        let providers =
            if file.analyses().is_empty() { Vec::new() } else { self.context.providers.providers(Some(team)).await? };
        let told = inputs.over(&file);
        let application = file.application.clone().unwrap_or_default();
        let mut targets = Vec::with_capacity(file.targets.len());
        for target in &file.targets {
            let plan = TargetPlanner { planner: &planner, file: &file, target, inputs, providers: &providers };
            let mut calls = Vec::new();
            for step in &target.constraints.before_deployment {
                calls.extend(plan.step(step).await);
            }
            let driver = match &target.driver {
                Driver::Record => "record",
                Driver::Webhook { .. } => {
                    let action = Action {
                        id: ASSIGNED_WHEN_SENT.into(),
                        deployment_id: ASSIGNED_WHEN_SENT.into(),
                        application: application.clone(),
                        target: target.name.clone(),
                        account: target.account.clone(),
                        namespace: target.namespace.clone(),
                        kind: ActionKind::Deploy,
                        weight: None,
                        context: told.context.clone(),
                        artifacts: told.artifacts.clone(),
                    };
                    calls.extend(planner.driver(target, &target.driver, &action).await);
                    "webhook"
                }
            };
            let strategy = target.strategy.as_deref().and_then(|s| file.strategy(s));
            // Collected first: the strategy's iterator is not `Send`.
            let strategy_steps: Vec<&Step> = strategy.into_iter().flat_map(|s| s.kind.steps()).collect();
            for step in strategy_steps {
                calls.extend(plan.step(step).await);
            }
            for hook in &file.hooks {
                calls.push(planner.hook(hook, target, &application).await);
            }
            for step in &target.constraints.after_deployment {
                calls.extend(plan.step(step).await);
            }
            let depends_on = target.constraints.depends_on.clone();
            targets.push(TargetPlan { name: target.name.clone(), depends_on, driver: driver.into(), calls });
        }
        Ok(Plan { ok: false, application: file.application.clone(), warnings, targets, call: None }.conclude())
    }
}

/// One target's steps, planned.
struct TargetPlanner<'p> {
    planner: &'p Planner<'p>,
    file: &'p DeploymentFile,
    target: &'p Target,
    inputs: &'p Inputs,
    providers: &'p [MetricProvider],
}

impl TargetPlanner<'_> {
    /// The calls one step makes: a webhook's, or an analysis' queries.
    async fn step(&self, step: &Step) -> Vec<PlannedCall> {
        match step {
            Step::RunWebhook(run) => {
                let request = RunRequest {
                    team: self.planner.team().to_owned(),
                    file: String::new(),
                    name: run.name.clone(),
                    environment: Some(self.target.name.clone()),
                    context: self.inputs.context.clone(),
                    link: Some(RunLink {
                        deployment_id: ASSIGNED_WHEN_SENT.into(),
                        step_context: run.context.clone(),
                        artifacts: self.inputs.over(self.file).artifacts,
                    }),
                    idempotency: None,
                    unknown_fields: UnknownFields::Warn,
                };
                let callback = self.planner.callback_uri();
                // The file was checked: every step names a webhook it defines.
                let Ok(found) = resolve(self.file, &request, ASSIGNED_WHEN_SENT, &callback) else { return Vec::new() };
                let at = run.location.path.clone();
                let values = (found.armory, found.context, found.artifacts);
                vec![self.planner.webhook(found.webhook, found.agent, values, at).await]
            }
            Step::Analysis(analysis) => {
                // As the orchestrator layers them: the deployment's, then the file's.
                let mut context = self.inputs.context.clone();
                context.extend(self.file.context.clone());
                let artifacts = self.inputs.over(self.file).artifacts;
                self.planner.queries(self.file, analysis, self.providers, self.target, (&context, &artifacts)).await
            }
            Step::Pause { .. } | Step::SetWeight { .. } | Step::Unsupported { .. } => Vec::new(),
        }
    }
}
