use borealis_api::{CreateWebhookRun, RunState, WebhookRun, WebhookRunList};

use super::{context_map, dry_run, read_file, start};
use crate::args::{RunsCommand, WebhookRunArgs};
use crate::client::{Failure, Relay, urlencode};
use crate::render::{self, safe};

pub async fn run(relay: &Relay, json: bool, command: &RunsCommand) -> Result<(), Failure> {
    match command {
        RunsCommand::List { state, webhook, page } => {
            let query = page.query(&[("state", state.as_ref()), ("webhook", webhook.as_ref())]);
            let reply: WebhookRunList = relay.get(&format!("/api/v1/webhook-runs?{query}")).await?;
            if json {
                render::json(&reply)
            } else {
                render::runs(&reply)
            }
            render::older(reply.next.as_deref());
        }
        RunsCommand::Cancel { id } => {
            let id = &relay.resolve("run", id).await?;
            let reply: WebhookRun = relay.post_empty(&format!("/api/v1/webhook-runs/{}/cancel", urlencode(id))).await?;
            if json {
                render::json(&reply);
            } else {
                say!("run {id}: {}", reply.state.as_str());
            }
        }
        RunsCommand::Show { id } => {
            let id = &relay.resolve("run", id).await?;
            let reply: WebhookRun = relay.get(&format!("/api/v1/webhook-runs/{}", urlencode(id))).await?;
            if json { render::json(&reply) } else { render::run(&reply) }
        }
    }
    Ok(())
}

/// `webhook run`: starts a run; with `--wait`, exits 0 on success and 1 otherwise.
pub async fn webhook_run(relay: &Relay, json: bool, args: &WebhookRunArgs) -> Result<(), Failure> {
    let file = read_file(&args.file)?;
    let body = CreateWebhookRun {
        file,
        name: args.name.clone(),
        environment: args.environment.clone(),
        context: context_map(&args.context)?,
        allow_unknown_fields: args.file.allow_unknown_fields,
    };
    if args.dry_run {
        return dry_run(relay, json, "/api/v1/webhook-runs/dry-run", &body).await;
    }
    let Some(id) = start::<WebhookRun>(relay, json, "/api/v1/webhook-runs", &body, "run", args.wait).await? else {
        return Ok(());
    };
    let path = format!("/api/v1/webhook-runs/{}", urlencode(&id));
    let run: WebhookRun = relay.wait_until_finished(&path, |run: &WebhookRun| run.finished_at.is_some()).await?;
    if json {
        render::json(&run);
    } else {
        say!("run {id}: {}", run.state.as_str());
        if let Some(message) = &run.md_message {
            say!("{}", safe(message, true));
        } else if let Some(reason) = &run.reason {
            say!("{}", safe(reason, false));
        }
    }
    match run.state {
        RunState::Succeeded => Ok(()),
        state => Err(Failure { code: 1, message: format!("webhook run {id} {}", state.as_str().replace('_', " ")) }),
    }
}
