//! The Agents screen: every agent identifier with its connected instances;
//! registering one (its secret shown once) and revoking one.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Redirect, Response};
use axum::{Extension, Form};
use borealis_store::CredentialKind;
use serde::Deserialize;

use super::page::{Chrome, ConfirmPage, Failure, Operator, addressed_authority, correctable, render, segment, when};
use crate::http::credentials;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/agents.html")]
struct AgentsPage {
    chrome: Chrome,
    agents: Vec<AgentRow>,
    registered: Option<Registered>,
    error: Option<String>,
    typed: String,
}

struct AgentRow {
    id: String,
    client_id: String,
    created_at: String,
    connected: bool,
    instances: Vec<InstanceRow>,
}

struct InstanceRow {
    name: String,
    version: String,
    remote_addr: String,
    connected_since: String,
    last_heartbeat: String,
    /// Counted where the session is held: another replica's are not known here.
    in_flight: String,
    draining: bool,
    replica: String,
}

/// A credential just created: shown on this one page, never again.
struct Registered {
    agent_id: String,
    client_id: String,
    client_secret: String,
    command: String,
}

#[derive(Deserialize)]
pub struct RegisterForm {
    id: String,
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, Failure> {
    Ok(render(&agents_page(&state, &operator, None, None, String::new()).await?, StatusCode::OK))
}

pub async fn register(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    uri: http::Uri,
    headers: HeaderMap,
    Form(form): Form<RegisterForm>,
) -> Result<Response, Failure> {
    let id = form.id.trim().to_owned();
    match correctable(credentials::create_credential(&state, CredentialKind::Agent, &operator.team, &id).await)? {
        Ok((client_id, client_secret)) => {
            let command = start_command(&state, &uri, &headers, &client_id);
            let registered = Registered { agent_id: id, client_id, client_secret, command };
            let page = agents_page(&state, &operator, Some(registered), None, String::new()).await?;
            Ok(render(&page, StatusCode::CREATED))
        }
        Err(problem) => {
            Ok(render(&agents_page(&state, &operator, None, Some(problem.detail), id).await?, problem.status))
        }
    }
}

pub async fn confirm_revoke(Extension(operator): Extension<Operator>, Path(id): Path<String>) -> Response {
    let page = ConfirmPage {
        chrome: Chrome::new("agents", &operator),
        title: format!("Revoke agent {id}"),
        question: format!("Revoke agent {id}?"),
        consequence: "Its connected instances are disconnected at once, and its credential can never connect again. \
                      Webhooks marked with this Agent Identifier fail until an agent is registered under it again."
            .into(),
        action: format!("/agents/{}/revoke", segment(&id)),
        button: format!("Revoke {id}"),
        cancel: "/agents".into(),
    };
    render(&page, StatusCode::OK)
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Redirect, Failure> {
    credentials::revoke_agent_named(&state, &borealis_core::team::AgentRef::new(operator.team, id)).await?;
    Ok(Redirect::to("/agents"))
}

async fn agents_page(
    state: &AppState,
    operator: &Operator,
    registered: Option<Registered>,
    error: Option<String>,
    typed: String,
) -> Result<AgentsPage, Failure> {
    let agents = credentials::agents(state, Some(&operator.team))
        .await?
        .into_iter()
        .map(|agent| AgentRow {
            id: agent.agent_id,
            client_id: agent.client_id,
            created_at: when(&agent.created_at),
            connected: agent.connected,
            instances: agent
                .instances
                .into_iter()
                .map(|i| InstanceRow {
                    name: i.instance,
                    version: i.version,
                    remote_addr: i.remote_addr.unwrap_or_else(|| "unknown".into()),
                    connected_since: when(&i.connected_since),
                    last_heartbeat: when(&i.last_heartbeat),
                    in_flight: if i.held_here {
                        i.in_flight.to_string()
                    } else {
                        format!("not known here (held by {})", i.replica)
                    },
                    draining: i.draining,
                    replica: i.replica,
                })
                .collect(),
        })
        .collect();
    Ok(AgentsPage { chrome: Chrome::new("agents", operator), agents, registered, error, typed })
}

/// The command that starts the agent with its new credential. The relay's
/// agent listener as the browser reaches this relay: a wildcard address
/// becomes the host the browser used.
fn start_command(state: &AppState, uri: &http::Uri, headers: &HeaderMap, client_id: &str) -> String {
    let scheme = if state.config.tls_cert.is_some() { "https" } else { "http" };
    let relay = match state.agents_addr {
        Some(addr) if !addr.ip().is_unspecified() => format!("{scheme}://{addr}"),
        Some(addr) => {
            let host =
                addressed_authority(uri, headers).map(|a| a.host().to_owned()).unwrap_or_else(|| "RELAY-HOST".into());
            format!("{scheme}://{host}:{}", addr.port())
        }
        None => format!("{scheme}://RELAY-HOST:PORT"),
    };
    // The secret goes in a file, never in the command: the process list
    // and the shell's history would show it.
    format!(
        "# Save the client secret above in a file only the agent's user can read, e.g.\n\
         # install -m 600 /dev/null /etc/borealis/agent-secret, then paste it in.\n\
         borealis-agent --relay {relay} \\\n  --client-id {client_id} \\\n  \
         --client-secret-file /etc/borealis/agent-secret \\\n  --allow HOST:PORT"
    )
}
