use borealis_api::{CreateDeployment, DecisionTaken, Deployment, DeploymentList, DeploymentState};

use super::{context_map, read_file, start};
use crate::args::{DeployArgs, DeploymentsCommand};
use crate::client::{Failure, Relay, urlencode};
use crate::render;

pub async fn run(relay: &Relay, json: bool, command: &DeploymentsCommand) -> Result<(), Failure> {
    match command {
        DeploymentsCommand::List => {
            let reply: DeploymentList = relay.get("/api/v1/deployments").await?;
            if json { render::json(&reply) } else { render::deployments(&reply) }
        }
        DeploymentsCommand::Show { id } => {
            let reply: Deployment = relay.get(&format!("/api/v1/deployments/{}", urlencode(id))).await?;
            if json { render::json(&reply) } else { render::deployment(&reply) }
        }
    }
    Ok(())
}

/// `deploy`: starts a deployment; with `--wait`, exits 0 on success and 1 otherwise.
pub async fn deploy(relay: &Relay, json: bool, args: &DeployArgs) -> Result<(), Failure> {
    let file = read_file(&args.file)?;
    let body = CreateDeployment {
        file,
        context: context_map(&args.context)?,
        allow_unknown_fields: args.file.allow_unknown_fields,
    };
    let Some(id) = start::<Deployment>(relay, json, "/api/v1/deployments", &body, "deployment", args.wait).await?
    else {
        return Ok(());
    };
    let path = format!("/api/v1/deployments/{}", urlencode(&id));
    let done: Deployment = relay.wait_until_finished(&path, |d: &Deployment| d.finished_at.is_some()).await?;
    if json {
        render::json(&done);
    } else {
        render::deployment(&done);
    }
    match done.state {
        DeploymentState::Succeeded => Ok(()),
        state => Err(Failure { code: 1, message: format!("deployment {id} {}", state.as_str()) }),
    }
}

/// `approve`, `reject`, `rollback` and `continue`: `verb` is the route's last segment.
pub async fn decide(relay: &Relay, deployment: &str, target: &str, verb: &str) -> Result<(), Failure> {
    let path = format!("/api/v1/deployments/{}/targets/{}/{verb}", urlencode(deployment), urlencode(target));
    let reply: DecisionTaken = relay.post_empty(&path).await?;
    println!("{target} of {deployment}: {}", reply.decision.as_str());
    Ok(())
}
