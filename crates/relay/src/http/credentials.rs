//! `/api/v1/agents` and `/api/v1/clients`: credentials, shown once.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use borealis_store::CredentialKind;

use super::AppState;
use super::authorize::ActingTeam;
use super::extract::json_body;
use super::problem::Problem;
use crate::auth;
use borealis_core::team::AgentRef;
use borealis_engine::clock::rfc3339;

pub async fn create_agent(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let borealis_api::CreateAgent { id } = json_body(&body)?;
    let (client_id, client_secret) = create_credential(&state, CredentialKind::Agent, &team, &id).await?;
    let body = borealis_api::AgentCredentials { agent_id: id, team, client_id, client_secret };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn create_client(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let borealis_api::CreateClient { name } = json_body(&body)?;
    let (client_id, client_secret) = create_credential(&state, CredentialKind::Callback, &team, &name).await?;
    let body = borealis_api::ClientCredentials { name, team, client_id, client_secret };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Validates the name, creates the credential in `team`, and returns its
/// client id and secret, to be shown once.
pub(crate) async fn create_credential(
    state: &AppState,
    kind: CredentialKind,
    team: &str,
    subject: &str,
) -> Result<(String, String), Problem> {
    let (what, slug) = match kind {
        CredentialKind::Agent => ("agent identifier", "invalid-agent-id"),
        CredentialKind::Callback => ("client name", "invalid-client-name"),
    };
    auth::validate_name(what, subject).map_err(|e| Problem::bad_request(slug, e))?;
    let (client_id, secret) = state.auth.create_credential(kind, team, subject).await?;
    tracing::info!(kind = kind.as_str(), team, subject, %client_id, "credential created");
    Ok((client_id, secret.expose().to_owned()))
}

pub async fn list_agents(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
) -> Result<Response, Problem> {
    let agents = agents(&state, Some(&team)).await?;
    Ok(Json(borealis_api::AgentList { agents }).into_response())
}

/// Every agent registered in `team` (or in any team) with the instances
/// connected to any live replica.
pub(crate) async fn agents(state: &AppState, team: Option<&str>) -> Result<Vec<borealis_api::Agent>, Problem> {
    let credentials = state.store.active_credentials(CredentialKind::Agent, team).await.map_err(Problem::from)?;
    let sessions = state.hub.sessions();
    // Sessions other live replicas hold, with their replica's name.
    let since = state.replica.alive_since();
    let replicas: std::collections::HashMap<String, borealis_store::ReplicaRecord> =
        state.store.replicas(since).await.map_err(Problem::from)?.into_iter().map(|r| (r.id.clone(), r)).collect();
    let mut elsewhere: std::collections::HashMap<AgentRef, Vec<borealis_api::AgentInstance>> = Default::default();
    for record in state.store.sessions(None, since).await.map_err(Problem::from)? {
        let Some(replica) = replicas.get(&record.replica_id).filter(|r| r.id != state.replica.id) else { continue };
        elsewhere.entry(AgentRef::new(record.team, record.agent_id)).or_default().push(borealis_api::AgentInstance {
            session_id: record.session_id,
            instance: record.instance,
            version: record.version,
            remote_addr: record.remote_addr,
            connected_since: rfc3339(record.connected_at),
            last_heartbeat: rfc3339(replica.seen_at),
            in_flight: 0,
            capacity: 0,
            standby_calls: 0,
            standby_idle: 0,
            lanes: 0,
            lanes_open: 0,
            allow_list: record.allow_list.map(allow_report),
            draining: false,
            replica: replica.name.clone(),
            held_here: false,
        });
    }
    let agents: Vec<borealis_api::Agent> = credentials
        .iter()
        .map(|credential| {
            let agent = AgentRef::new(credential.team.clone(), credential.subject.clone());
            let mut instances: Vec<borealis_api::AgentInstance> = sessions
                .get(&agent)
                .into_iter()
                .flatten()
                .map(|s| borealis_api::AgentInstance {
                    session_id: s.id.clone(),
                    instance: s.info.instance.clone(),
                    version: s.info.version.clone(),
                    remote_addr: s.info.remote_addr.map(|a| a.to_string()),
                    connected_since: rfc3339(s.connected_at),
                    last_heartbeat: rfc3339(s.last_heartbeat()),
                    in_flight: s.in_flight() as u64,
                    capacity: s.info.capacity,
                    standby_calls: s.info.standby_calls,
                    standby_idle: s.standby_idle() as u64,
                    lanes: s.info.lanes,
                    lanes_open: s.lanes_open() as u64,
                    allow_list: s.info.allow_list.clone().map(allow_report),
                    draining: s.is_draining(),
                    replica: state.replica.name.clone(),
                    held_here: true,
                })
                .collect();
            instances.extend(elsewhere.remove(&agent).unwrap_or_default());
            borealis_api::Agent {
                agent_id: credential.subject.clone(),
                team: credential.team.clone(),
                client_id: credential.client_id.clone(),
                created_at: rfc3339(credential.created_at),
                connected: !instances.is_empty(),
                instances,
            }
        })
        .collect();
    Ok(agents)
}

pub async fn revoke_client(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    revoke_client_named(&state, &team, &name).await?;
    Ok(Json(borealis_api::ClientRevoked { name, revoked: true }).into_response())
}

pub(crate) async fn revoke_client_named(state: &AppState, team: &str, name: &str) -> Result<(), Problem> {
    let revoked = state.store.revoke(CredentialKind::Callback, team, name).await.map_err(Problem::from)?;
    state.auth.forget_live();
    if !revoked {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-client",
            format!("no callback client named {name:?} is registered in team {team:?}"),
        ));
    }
    tracing::info!(client = name, team, "callback client revoked");
    Ok(())
}

pub async fn revoke_agent(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let closed = revoke_agent_named(&state, &AgentRef::new(team, id.clone())).await?;
    Ok(Json(borealis_api::AgentRevoked { agent_id: id, revoked: true, sessions_closed: closed as u64 }).into_response())
}

/// Revokes `agent` and ends its sessions here; how many ended.
pub(crate) async fn revoke_agent_named(state: &AppState, agent: &AgentRef) -> Result<usize, Problem> {
    let (id, team) = (&agent.name, &agent.team);
    let revoked = state.store.revoke(CredentialKind::Agent, team, id).await.map_err(Problem::from)?;
    state.auth.forget_live();
    if !revoked {
        let detail = format!("agent {id:?} is not registered in team {team:?}");
        return Err(Problem::new(StatusCode::NOT_FOUND, "unknown-agent", detail));
    }
    let closed = state.hub.disconnect(agent, tonic::Status::unauthenticated("the credential was revoked"));
    tracing::info!(agent = id.as_str(), team = team.as_str(), sessions_closed = closed, "agent revoked");
    Ok(closed)
}

fn allow_report(list: borealis_store::ReportedAllowList) -> borealis_api::AllowListReport {
    borealis_api::AllowListReport { rules: list.rules, any: list.any }
}
