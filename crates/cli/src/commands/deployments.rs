use std::collections::HashMap;
use std::time::Duration;

use borealis_api::{
    AbortDeployment, CreateDeployment, DecisionTaken, Deployment, DeploymentList, DeploymentState, TargetState,
};

use super::{context_map, dry_run, pairs_map, read_file, start};
use crate::args::{AbortArgs, DeployArgs, DeploymentsCommand};
use crate::client::{Failure, Relay, urlencode};
use crate::render::{self, safe};

pub async fn run(relay: &Relay, json: bool, command: &DeploymentsCommand) -> Result<(), Failure> {
    match command {
        DeploymentsCommand::List { state, application, page } => {
            let query = page.query(&[("state", state.as_ref()), ("application", application.as_ref())]);
            let reply: DeploymentList = relay.get(&format!("/api/v1/deployments?{query}")).await?;
            if json {
                render::json(&reply)
            } else {
                render::deployments(&reply)
            }
            render::older(reply.next.as_deref());
        }
        DeploymentsCommand::Show { id } => {
            let id = &relay.resolve("deployment", id).await?;
            let reply: Deployment = relay.get(&format!("/api/v1/deployments/{}", urlencode(id))).await?;
            if json { render::json(&reply) } else { render::deployment(&reply) }
        }
    }
    Ok(())
}

/// `deploy`: starts a deployment; with `--wait`, follows it as it moves
/// (`stream`: as JSON lines) and exits 0 on success and 1 otherwise.
pub async fn deploy(relay: &Relay, json: bool, stream: bool, args: &DeployArgs) -> Result<(), Failure> {
    let file = read_file(&args.file)?;
    let body = CreateDeployment {
        file,
        context: context_map(&args.context)?,
        artifacts: pairs_map("--artifact", &args.artifacts)?,
        allow_unknown_fields: args.file.allow_unknown_fields,
    };
    if args.dry_run {
        return dry_run(relay, json, "/api/v1/deployments/dry-run", &body).await;
    }
    let Some(id) = start::<Deployment>(relay, json, "/api/v1/deployments", &body, "deployment", args.wait).await?
    else {
        return Ok(());
    };
    let progress = match (stream, json) {
        (true, _) => Progress::JsonLines,
        (false, true) => Progress::TextOnStderr,
        (false, false) => Progress::Text,
    };
    let done = follow(relay, &id, progress).await?;
    if stream {
        let end = serde_json::json!({
            "type": "finished", "deployment": done.id, "state": done.state, "reason": done.reason,
        });
        say!("{end}");
    } else if json {
        render::json(&done);
    } else {
        say!();
        render::deployment(&done);
    }
    match done.state {
        DeploymentState::Succeeded => Ok(()),
        state => Err(Failure { code: 1, message: format!("deployment {id} {}", state.as_str()) }),
    }
}

/// Where `deploy --wait` tells of each change.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Progress {
    Text,
    /// Standard output holds the end's JSON alone.
    TextOnStderr,
    JsonLines,
}

/// How often a followed deployment is read again.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Reads deployment `id` until it ends, telling of each target's change
/// (its state, what it does or waits for, why) as it is seen.
async fn follow(relay: &Relay, id: &str, progress: Progress) -> Result<Deployment, Failure> {
    let path = format!("/api/v1/deployments/{}", urlencode(id));
    let mut seen: HashMap<String, (TargetState, Option<String>, Option<String>)> = HashMap::new();
    loop {
        let deployment: Deployment = relay.get(&path).await?;
        for target in &deployment.targets {
            let now = (target.state, target.step.clone(), target.reason.clone());
            if seen.get(&target.name) == Some(&now) {
                continue;
            }
            seen.insert(target.name.clone(), now);
            if progress == Progress::JsonLines {
                let line = serde_json::json!({
                    "type": "target", "deployment": id, "target": target.name, "state": target.state,
                    "step": target.step, "reason": target.reason, "updatedAt": target.updated_at,
                });
                say!("{line}");
                continue;
            }
            let mut line = format!("{}: {}", safe(&target.name, false), target.state.as_str().replace('_', " "));
            if let Some(step) = &target.step {
                line.push_str(&format!(" ({})", safe(step, false)));
            }
            if let Some(reason) = &target.reason {
                line.push_str(&format!(": {}", safe(reason, false)));
            }
            match progress {
                Progress::TextOnStderr => eprintln!("{line}"),
                _ => say!("{line}"),
            }
        }
        if deployment.finished_at.is_some() {
            return Ok(deployment);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// `abort`: asks the deployment to stop and, unless `--no-wait`, waits until
/// it has ended; exits 0 once it ended `aborted`.
pub async fn abort(relay: &Relay, json: bool, args: &AbortArgs) -> Result<(), Failure> {
    let id = &relay.resolve("deployment", &args.deployment).await?;
    let path = format!("/api/v1/deployments/{}", urlencode(id));
    let body = AbortDeployment { reason: args.reason.clone(), rollback: !args.no_rollback };
    let asked: Deployment = relay.post(&format!("{path}/abort"), &body).await?;
    if args.no_wait {
        if json {
            render::json(&asked)
        } else {
            say!("deployment {id}: abort asked")
        }
        return Ok(());
    }
    eprintln!("deployment {id}: abort asked; waiting for it to stop");
    let done: Deployment = relay.wait_until_finished(&path, |d: &Deployment| d.finished_at.is_some()).await?;
    if json {
        render::json(&done);
    } else {
        render::deployment(&done);
    }
    match done.state {
        DeploymentState::Aborted => Ok(()),
        state => Err(Failure::failed(format!("deployment {id} ended {} before the abort", state.as_str()))),
    }
}

/// `approve`, `reject`, `rollback` and `continue`: `verb` is the route's last segment.
pub async fn decide(relay: &Relay, deployment: &str, target: &str, verb: &str) -> Result<(), Failure> {
    let deployment = &relay.resolve("deployment", deployment).await?;
    let path = format!("/api/v1/deployments/{}/targets/{}/{verb}", urlencode(deployment), urlencode(target));
    let reply: DecisionTaken = relay.post_empty(&path).await?;
    match (&reply.approved_by, reply.required_approvals) {
        (Some(by), Some(required)) => say!(
            "{target} of {deployment}: approval counted, {} of {required} ({}); it waits for more",
            by.len(),
            by.join(", ")
        ),
        _ => say!("{target} of {deployment}: {}", reply.decision.as_str()),
    }
    Ok(())
}
