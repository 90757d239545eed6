//! Checks that need the whole file: names defined and unique, and what a
//! deployment needs beyond a file that reads. Tested through
//! [`parse`](super::parse), with the reader's tests.

use std::collections::BTreeMap;

use super::diagnostic::{Diagnostic, Location};
use super::model::{DeploymentFile, NetworkMode, Step};

/// Checks across the whole file, after every part parsed.
pub(super) fn validate(file: &DeploymentFile, errors: &mut Vec<Diagnostic>, warnings: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<&str, &Location> = BTreeMap::new();
    for webhook in &file.webhooks {
        if let Some(first) = seen.insert(&webhook.name, &webhook.location) {
            errors.push(Diagnostic::at(
                &Location { path: format!("{}.name", webhook.location.path), ..webhook.location.clone() },
                format!("duplicate webhook name {:?} (first defined at {first})", webhook.name),
            ));
        }
        if webhook.network_mode == NetworkMode::Direct && webhook.agent_identifier.is_some() {
            let at =
                Location { path: format!("{}.agentIdentifier", webhook.location.path), ..webhook.location.clone() };
            warnings.push(Diagnostic::at(&at, "ignored: networkMode is direct"));
        }
    }
    for run in file.run_webhooks() {
        if file.webhook(&run.name).is_none() {
            let defined: Vec<&str> = file.webhooks.iter().map(|w| w.name.as_str()).collect();
            let known = if defined.is_empty() {
                "none is defined".to_owned()
            } else {
                format!("defined: {}", defined.join(", "))
            };
            errors.push(Diagnostic::at(
                &run.location,
                format!("runWebhook names webhook {:?}, which is not defined ({known})", run.name),
            ));
        }
    }
    for analysis in file.analyses() {
        for query in &analysis.queries {
            if file.query(&query.name).is_none() {
                let defined: Vec<&str> = file.metrics.queries.iter().map(|q| q.name.as_str()).collect();
                let known = if defined.is_empty() {
                    "none is defined under analysis.queries".to_owned()
                } else {
                    format!("defined: {}", defined.join(", "))
                };
                errors.push(Diagnostic::at(&query.location, format!("unknown query {:?} ({known})", query.name)));
            }
        }
        if file.provider_of(analysis).is_none() {
            errors.push(Diagnostic::at(
                &analysis.location,
                "no metric provider: give metricProviderName, or analysis.defaultMetricProviderName at the top level",
            ));
        }
    }
    for target in &file.targets {
        for step in file.steps_of(target) {
            let Step::RunWebhook(run) = step else { continue };
            let Some(webhook) = file.webhook(&run.name) else { continue };
            if webhook.network_mode == NetworkMode::RemoteNetworkAgent
                && webhook.agent_identifier.is_none()
                && target.account.is_none()
            {
                errors.push(Diagnostic::at(
                    &run.location,
                    format!(
                        "webhook {:?} uses remoteNetworkAgent with no agentIdentifier, and target {:?} has no account to take it from",
                        webhook.name, target.name
                    ),
                ));
            }
        }
    }
}

/// What a deployment needs beyond a valid file: targets, a `dependsOn`
/// graph without unknown names or cycles, defined strategies, and only
/// steps this version runs.
pub fn validate_deployment(file: &DeploymentFile) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    let mut error = |at: &Location, message: String| errors.push(Diagnostic::at(at, message));
    if file.application.is_none() {
        let at = Location { path: "application".into(), ..Location::default() };
        error(&at, "a deployment needs an application name".into());
    }
    if file.targets.is_empty() {
        error(&Location::default(), "a deployment needs at least one target under targets".into());
    }
    let names: Vec<&str> = file.targets.iter().map(|t| t.name.as_str()).collect();
    for target in &file.targets {
        let deps = &target.constraints;
        for (dep, at) in deps.depends_on.iter().zip(&deps.depends_on_locations) {
            if !names.contains(&dep.as_str()) {
                error(
                    at,
                    format!("dependsOn names target {dep:?}, which is not defined (targets: {})", names.join(", ")),
                );
            } else if dep == &target.name {
                error(at, "a target cannot depend on itself".into());
            }
        }
        match &target.strategy {
            Some(strategy) if file.strategy(strategy).is_none() => {
                let defined: Vec<&str> = file.strategies.iter().map(|s| s.name.as_str()).collect();
                error(
                    &target.location,
                    format!("strategy {strategy:?} is not defined (strategies: {})", defined.join(", ")),
                );
            }
            _ => {}
        }
        for step in file.steps_of(target) {
            if let Step::Unsupported { kind, location } = step {
                error(location, format!("{kind} steps are not supported yet"));
            }
        }
        for step in target.constraints.steps() {
            if let Step::SetWeight { location, .. } = step {
                error(location, "setWeight belongs in a canary strategy's steps, not in constraints".into());
            }
        }
    }
    if let Some(cycle) = dependency_cycle(file) {
        let at = file
            .target(&cycle[0])
            .and_then(|t| t.constraints.depends_on_locations.first().cloned())
            .unwrap_or_default();
        error(&at, format!("dependsOn forms a cycle: {}", cycle.join(" -> ")));
    }
    errors.sort_by_key(|d| (d.line, d.column));
    errors
}

/// A cycle in `dependsOn`, as the names along it, first repeated at the end.
fn dependency_cycle(file: &DeploymentFile) -> Option<Vec<String>> {
    fn visit(file: &DeploymentFile, name: &str, path: &mut Vec<String>, done: &mut Vec<String>) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == name) {
            let mut cycle = path[start..].to_vec();
            cycle.push(name.to_owned());
            return Some(cycle);
        }
        if done.iter().any(|n| n == name) {
            return None;
        }
        path.push(name.to_owned());
        for dep in file.target(name).map(|t| t.constraints.depends_on.clone()).unwrap_or_default() {
            if let Some(cycle) = visit(file, &dep, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.push(name.to_owned());
        None
    }
    let mut done = Vec::new();
    file.targets.iter().find_map(|t| visit(file, &t.name, &mut Vec::new(), &mut done))
}
