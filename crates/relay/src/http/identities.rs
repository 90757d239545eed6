//! `/api/v1/teams`, `/api/v1/service-accounts` and `/api/v1/audit`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use borealis_engine::clock::rfc3339;
use borealis_store::{AuditQuery, BindingSubject, Conflict, RoleBinding, ServiceAccount, StoreError};
use serde::Deserialize;

use super::AppState;
use super::authorize::ActingTeam;
use super::extract::{QueryOf, json_body, page_limit};
use super::problem::Problem;
use crate::access::personal::{self, PersonalError};
use crate::access::principal::{self, Principal};
use crate::access::rules::Role;
use crate::auth;

/// A service account's token is good this long unless asked otherwise.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// And at most this long.
const MAX_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

fn conflict(err: StoreError) -> Problem {
    match err {
        StoreError::Conflict(Conflict::Duplicate(what)) => {
            Problem::new(StatusCode::CONFLICT, "conflict", format!("already exists: {what}"))
        }
        other => other.into(),
    }
}

pub async fn create_team(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Result<Response, Problem> {
    let request: borealis_api::CreateTeam = json_body(&body)?;
    auth::validate_name("team", &request.name).map_err(|e| Problem::bad_request("invalid-team", e))?;
    let team = state.store.create_team(&request.name).await.map_err(conflict)?;
    tracing::info!(team = team.name.as_str(), "team created");
    Ok((StatusCode::CREATED, Json(describe_team(team))).into_response())
}

fn describe_team(team: borealis_store::Team) -> borealis_api::Team {
    borealis_api::Team {
        name: team.name,
        created_at: rfc3339(team.created_at),
        forbid_self_approval: team.forbid_self_approval,
    }
}

/// `PATCH /api/v1/teams/{name}`: the team is the acting team (authorized there).
pub async fn update_team(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: borealis_api::UpdateTeam = json_body(&body)?;
    existing_team(&state, &name).await?;
    if let Some(forbid) = request.forbid_self_approval {
        state.store.set_forbid_self_approval(&name, forbid).await?;
        tracing::info!(team = name.as_str(), forbid_self_approval = forbid, "team updated");
    }
    let team = Problem::found(state.store.team(&name).await, "unknown-team", || format!("no team {name:?}"))?;
    Ok(Json(describe_team(team)).into_response())
}

pub async fn list_teams(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, Problem> {
    let teams = state.store.teams().await?;
    let mine =
        |name: &str| principal.grants.organization_admin || principal.grants.roles.iter().any(|(t, _)| t == name);
    let teams = teams.into_iter().filter(|t| mine(&t.name)).map(describe_team).collect();
    Ok(Json(borealis_api::TeamList { teams }).into_response())
}

fn describe(account: &ServiceAccount) -> borealis_api::ServiceAccount {
    borealis_api::ServiceAccount {
        id: account.id.clone(),
        team: account.team.clone(),
        name: account.name.clone(),
        roles: account.roles.clone(),
        created_at: rfc3339(account.created_at),
        created_by: account.created_by.clone(),
        expires_at: account.expires_at.map(rfc3339),
        revoked_at: account.revoked_at.map(rfc3339),
    }
}

/// The acting team, which must exist.
async fn existing_team(state: &AppState, team: &str) -> Result<(), Problem> {
    Problem::found(state.store.team(team).await, "unknown-team", || {
        format!("no team {team:?} (create it with borealis teams create {team})")
    })
    .map(|_| ())
}

fn describe_binding(binding: &RoleBinding) -> borealis_api::RoleBinding {
    borealis_api::RoleBinding {
        id: binding.id.clone(),
        team: binding.team.clone(),
        kind: match binding.subject_kind {
            BindingSubject::User => borealis_api::BindingKind::User,
            BindingSubject::Group => borealis_api::BindingKind::Group,
        },
        subject: binding.subject.clone(),
        role: binding.role.clone(),
        created_at: rfc3339(binding.created_at),
        created_by: binding.created_by.clone(),
    }
}

/// The longest subject or group name a binding takes.
const MAX_SUBJECT_BYTES: usize = 256;

pub async fn create_role_binding(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: borealis_api::CreateRoleBinding = json_body(&body)?;
    let invalid = |detail: String| Problem::bad_request("invalid-role-binding", detail);
    let subject = request.subject.trim();
    if subject.is_empty() || subject.len() > MAX_SUBJECT_BYTES || subject.chars().any(char::is_control) {
        return Err(invalid(format!(
            "subject must be 1 to {MAX_SUBJECT_BYTES} characters, none of them control characters"
        )));
    }
    let role = Role::parse(&request.role).ok_or_else(|| {
        invalid(format!(
            "unknown role {:?}: the roles are viewer, deployer, approver, operator and admin",
            request.role
        ))
    })?;
    existing_team(&state, &team).await?;
    let binding = RoleBinding {
        id: principal::new_id(),
        team,
        subject_kind: match request.kind {
            borealis_api::BindingKind::User => BindingSubject::User,
            borealis_api::BindingKind::Group => BindingSubject::Group,
        },
        subject: subject.to_owned(),
        role: role.as_str().to_owned(),
        created_at: SystemTime::now(),
        created_by: principal.actor.label(),
    };
    state.store.create_role_binding(&binding).await.map_err(conflict)?;
    tracing::info!(
        team = binding.team.as_str(),
        kind = binding.subject_kind.as_str(),
        subject = binding.subject.as_str(),
        role = binding.role.as_str(),
        "role binding created"
    );
    Ok((StatusCode::CREATED, Json(describe_binding(&binding))).into_response())
}

pub async fn list_role_bindings(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
) -> Result<Response, Problem> {
    let bindings = state.store.role_bindings(Some(&team)).await?;
    let role_bindings = bindings.iter().map(describe_binding).collect();
    Ok(Json(borealis_api::RoleBindingList { role_bindings }).into_response())
}

pub async fn delete_role_binding(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let found = state.store.role_bindings(Some(&team)).await?.into_iter().find(|b| b.id == id);
    let unknown = || {
        Problem::new(StatusCode::NOT_FOUND, "unknown-role-binding", format!("no role binding {id:?} in team {team:?}"))
    };
    let binding = found.ok_or_else(unknown)?;
    if !state.store.delete_role_binding(&team, &id).await? {
        return Err(unknown());
    }
    tracing::info!(team = team.as_str(), binding = id.as_str(), "role binding removed");
    Ok(Json(describe_binding(&binding)).into_response())
}

pub async fn create_service_account(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: borealis_api::CreateServiceAccount = json_body(&body)?;
    let invalid = |detail: String| Problem::bad_request("invalid-service-account", detail);
    auth::validate_name("service account", &request.name).map_err(invalid)?;
    if request.roles.is_empty() {
        return Err(invalid("give at least one role (viewer, deployer, approver, operator, admin)".into()));
    }
    let mut roles = Vec::new();
    for role in &request.roles {
        let role = Role::parse(role).ok_or_else(|| {
            invalid(format!("unknown role {role:?}: the roles are viewer, deployer, approver, operator and admin"))
        })?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    let lifetime = match &request.expires_in {
        Some(text) => borealis_core::duration::parse(text).map_err(|e| invalid(format!("expiresIn: {e}")))?,
        None => DEFAULT_LIFETIME,
    };
    if lifetime.is_zero() || lifetime > MAX_LIFETIME {
        return Err(invalid("expiresIn must be more than 0 and at most 2 years (730d)".into()));
    }
    existing_team(&state, &team).await?;
    let id = principal::new_id();
    let (token, secret_hash) = principal::mint(&id);
    let now = SystemTime::now();
    let account = ServiceAccount {
        id,
        team,
        name: request.name,
        roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
        secret_hash,
        created_at: now,
        created_by: principal.actor.label(),
        expires_at: Some(now + lifetime),
        revoked_at: None,
    };
    state.store.create_service_account(&account).await.map_err(conflict)?;
    tracing::info!(
        service_account = account.id.as_str(),
        team = account.team.as_str(),
        name = account.name.as_str(),
        roles = account.roles.join(",").as_str(),
        "service account created"
    );
    let reply = borealis_api::ServiceAccountCreated { account: describe(&account), token: token.expose().to_owned() };
    Ok((StatusCode::CREATED, Json(reply)).into_response())
}

pub async fn list_service_accounts(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
) -> Result<Response, Problem> {
    let accounts = state.store.service_accounts(Some(&team)).await?;
    let service_accounts = accounts.iter().map(describe).collect();
    Ok(Json(borealis_api::ServiceAccountList { service_accounts }).into_response())
}

pub async fn revoke_service_account(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let unknown = || {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-service-account",
            format!("no live service account {id:?} in team {team:?}"),
        )
    };
    let account = state.store.service_account(&id).await?.filter(|a| a.team == team).ok_or_else(unknown)?;
    if !state.store.revoke_service_account(&account.id, SystemTime::now()).await? {
        return Err(unknown());
    }
    tracing::info!(service_account = account.id.as_str(), team = account.team.as_str(), "service account revoked");
    let revoked = state.store.service_account(&account.id).await?.unwrap_or(account);
    Ok(Json(describe(&revoked)).into_response())
}

/// `?team=&actor=&action=&since=&until=&limit=&before=`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditParams {
    pub team: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<u32>,
    pub before: Option<String>,
}

/// A time: RFC 3339, or a duration meaning that long ago.
fn time_param(name: &str, text: &str, now: SystemTime) -> Result<SystemTime, Problem> {
    if let Ok(ago) = borealis_core::duration::parse(text) {
        return Ok(now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH));
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| {
        Problem::bad_request(
            "invalid-query",
            format!("{name} must be a time (2026-12-07T10:00:00Z) or how long ago (24h), not {text:?}"),
        )
    })
}

pub async fn list_audit(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    QueryOf(params): QueryOf<AuditParams>,
) -> Result<Response, Problem> {
    let organization = principal.grants.organization_admin;
    Ok(Json(audit_list(&state, organization, team, &params).await?).into_response())
}

/// The page of the trail `params` asks for, in the acting team (every
/// team's for an organization admin who names none).
pub(crate) async fn audit_list(
    state: &AppState,
    organization_admin: bool,
    team: String,
    params: &AuditParams,
) -> Result<borealis_api::AuditList, Problem> {
    let now = SystemTime::now();
    let given = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
    let team = match given(&params.team) {
        None if organization_admin => None,
        _ => Some(team),
    };
    let limit = page_limit(params.limit, 100)?;
    let before = match given(&params.before) {
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            Problem::bad_request("invalid-query", "before is not a cursor this relay gave (a list's next)")
        })?),
        None => None,
    };
    let query = AuditQuery {
        team,
        actor: given(&params.actor),
        action: given(&params.action),
        since: given(&params.since).map(|t| time_param("since", &t, now)).transpose()?,
        until: given(&params.until).map(|t| time_param("until", &t, now)).transpose()?,
        before,
        limit,
    };
    let entries = state.store.audit(&query).await?;
    let next = (entries.len() as u32 >= limit).then(|| entries.last().map(|e| e.seq.to_string())).flatten();
    let entries = entries
        .into_iter()
        .map(|e| borealis_api::AuditEntry {
            seq: e.seq,
            time: rfc3339(e.time),
            actor: borealis_api::Actor { kind: e.actor_kind, id: e.actor_id, name: e.actor_name },
            team: e.team,
            action: e.action,
            object: e.object,
            outcome: e.outcome,
            status: e.status,
            source_address: e.source_address,
            request_id: e.request_id,
        })
        .collect();
    Ok(borealis_api::AuditList { entries, next })
}

/// A personal token as the API shows it.
pub(crate) fn describe_personal(token: &borealis_store::PersonalToken, now: SystemTime) -> borealis_api::PersonalToken {
    let state = match (token.revoked_at, personal::is_live(token, now)) {
        (Some(_), _) => "revoked",
        (None, true) => "live",
        (None, false) => "expired",
    };
    borealis_api::PersonalToken {
        id: token.id.clone(),
        description: token.description.clone(),
        person: borealis_api::Actor {
            kind: "user".into(),
            id: token.person.subject.clone(),
            name: token.person.name.clone(),
        },
        created_at: rfc3339(token.created_at),
        expires_at: rfc3339(token.expires_at),
        revoked_at: token.revoked_at.map(rfc3339),
        state: state.into(),
    }
}

/// The reply to a refusal about personal tokens.
pub(crate) fn personal_problem(err: PersonalError) -> Problem {
    let detail = err.to_string();
    match err {
        PersonalError::Invalid(_) => Problem::bad_request("invalid-personal-token", detail),
        PersonalError::TooMany { .. } => Problem::new(StatusCode::CONFLICT, "too-many-personal-tokens", detail),
        PersonalError::NotFound(_) => Problem::new(StatusCode::NOT_FOUND, "unknown-personal-token", detail),
        PersonalError::NotOrganizationAdmin => Problem::new(StatusCode::FORBIDDEN, "forbidden", detail),
        PersonalError::NoPerson => Problem::bad_request("no-person", detail),
        PersonalError::Store(err) => err.into(),
    }
}

/// `?all=true`: every person's; `?person=SUBJECT`: one person's;
/// `?state=live`: only live ones.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PersonalTokenParams {
    #[serde(default)]
    pub all: bool,
    pub person: Option<String>,
    pub state: Option<String>,
}

pub async fn list_personal_tokens(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    QueryOf(params): QueryOf<PersonalTokenParams>,
) -> Result<Response, Problem> {
    let live_only = match params.state.as_deref() {
        None | Some("" | "all") => false,
        Some("live") => true,
        Some(other) => {
            let detail = format!("state {:?} is not one of live, all", other.chars().take(32).collect::<String>());
            return Err(Problem::bad_request("invalid-query", detail));
        }
    };
    let person = params.person.filter(|p| !p.is_empty());
    let listing = personal::Listing { everyone: params.all, person, live_only };
    let now = SystemTime::now();
    let tokens = personal::list(&*state.store, &principal, &listing, now).await.map_err(personal_problem)?;
    let personal_tokens = tokens.iter().map(|token| describe_personal(token, now)).collect();
    Ok(Json(borealis_api::PersonalTokenList { personal_tokens }).into_response())
}

pub async fn revoke_personal_token(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let now = SystemTime::now();
    let revoked = personal::revoke(&*state.store, &principal, &id, now).await.map_err(personal_problem)?;
    tracing::info!(token = revoked.id.as_str(), person = revoked.person.subject.as_str(), "personal token revoked");
    Ok(Json(describe_personal(&revoked, now)).into_response())
}

/// `?person=SUBJECT`: whose (an organization admin's reach); else one's own.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RevokeAllParams {
    pub person: Option<String>,
}

pub async fn revoke_personal_tokens(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    QueryOf(params): QueryOf<RevokeAllParams>,
) -> Result<Response, Problem> {
    let person = params.person.filter(|p| !p.is_empty());
    let revoked = personal::revoke_all(&*state.store, &principal, person.as_deref(), SystemTime::now())
        .await
        .map_err(personal_problem)?;
    let whose = person.as_deref().unwrap_or(principal.actor.id.as_str());
    tracing::info!(person = whose, revoked, "every live personal token of a person revoked");
    let mut response = Json(borealis_api::PersonalTokensRevoked { person: whose.to_owned(), revoked }).into_response();
    response
        .extensions_mut()
        .insert(super::authorize::AuditedObject(format!("/api/v1/personal-tokens?person={whose}")));
    Ok(response)
}
