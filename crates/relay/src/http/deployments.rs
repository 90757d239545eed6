//! `/api/v1/deployments` and approvals.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use borealis_store::{DeploymentView, RunRecord};

use super::AppState;
use super::authorize::{ActingTeam, Reach};
use super::extract::{ListQuery, QueryOf, WaitQuery, created, idempotency_key, json_body, next_cursor};
use super::problem::Problem;
use crate::access::principal::Principal;
use crate::preflight::RelayPreflight;
use borealis_core::deployment::UnknownFields;
use borealis_core::team::AgentRef;
use borealis_engine::clock::rfc3339;
use borealis_engine::deployments::inputs::Inputs;
use borealis_engine::deployments::journal::{self, Journal};
use borealis_engine::deployments::{Decided, Decider, Decision, DeploymentError, is_decision};

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: borealis_api::CreateDeployment = json_body(&body)?;
    let idempotency = idempotency_key(&headers, &body)?;
    let unknown = UnknownFields::allowed_if(request.allow_unknown_fields);
    let inputs = Inputs {
        context: request.context,
        artifacts: request.artifacts,
        started_by: Some(principal.actor.name.clone()),
        started_by_id: Some(principal.actor.label()),
    };
    let started = state.deployments.create(&team, &request.file, &inputs, idempotency.as_ref(), unknown).await?;
    if started.replayed {
        return Ok(created(Json(describe(&started.view)), true));
    }
    let mut warnings = started.warnings;
    if let Ok(parsed) = borealis_core::deployment::parse_with(&request.file, UnknownFields::Warn) {
        let agents = parsed.file.agents_used().into_iter().map(|name| AgentRef::new(team.clone(), name));
        warnings.extend(crate::preflight::disconnected_agents(&state, agents).await);
    }
    let mut value = describe(&started.view);
    value.warnings = Some(warnings);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// `POST /api/v1/deployments/dry-run`: every call the deployment would make, checked.
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: borealis_api::CreateDeployment = json_body(&body)?;
    let unknown = UnknownFields::allowed_if(request.allow_unknown_fields);
    let inputs = Inputs { context: request.context, artifacts: request.artifacts, ..Default::default() };
    let plan = state.deployments.plan(&team, &request.file, &inputs, unknown, &RelayPreflight::new(&state)).await?;
    Ok(Json(plan).into_response())
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    QueryOf(query): QueryOf<ListQuery>,
) -> Result<Response, Problem> {
    Ok(Json(summaries(&state, Some(team), &query).await?).into_response())
}

/// The page of deployments `query` asks for, with their targets' states:
/// of `team`, or of every team.
pub(crate) async fn summaries(
    state: &AppState,
    team: Option<String>,
    query: &ListQuery,
) -> Result<borealis_api::DeploymentList, Problem> {
    let valid = |s: &str| borealis_api::DeploymentState::parse(s).is_some();
    let page = query.page(team, valid, query.application.as_ref(), 100)?;
    let listed = state.deployments.list(&page).await?;
    let last = listed.last().map(|(record, _)| (record.created_at, record.id.as_str()));
    let next = next_cursor(&page, last, listed.len());
    let mut items = Vec::with_capacity(listed.len());
    for (record, targets) in &listed {
        items.push(borealis_api::DeploymentSummary {
            id: record.id.clone(),
            team: record.team.clone(),
            application: record.application.clone(),
            state: record.state,
            reason: record.reason.clone(),
            created_at: rfc3339(record.created_at),
            targets: targets
                .iter()
                .map(|t| borealis_api::TargetSummary { name: t.target.clone(), state: t.state })
                .collect(),
        });
    }
    Ok(borealis_api::DeploymentList { deployments: items, next })
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Extension(reach): Extension<Reach>,
    Path(id): Path<String>,
    QueryOf(query): QueryOf<WaitQuery>,
) -> Result<Response, Problem> {
    let deadline = query.deadline()?;
    within_reach(&state, &reach, &id).await?;
    let view = state.deployments.view_when_finished(&id, deadline).await?;
    Ok(Json(describe(&view)).into_response())
}

/// Deployment `id`, if the caller may reach it in its team; else it is
/// answered as unknown.
pub(crate) async fn within_reach(
    state: &AppState,
    reach: &Reach,
    id: &str,
) -> Result<borealis_store::DeploymentRecord, Problem> {
    let record = state.deployments.record(id).await?;
    if !reach.holds(&record.team) {
        return Err(DeploymentError::Unknown(id.to_owned()).into());
    }
    Ok(record)
}

pub async fn approve(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(reach): Extension<Reach>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, (&principal, &reach), &id, &target, Decision::Approve).await
}

pub async fn reject(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(reach): Extension<Reach>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, (&principal, &reach), &id, &target, Decision::Reject).await
}

/// `rollback`: an analysis step held for a decision rolls its target back.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(reach): Extension<Reach>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, (&principal, &reach), &id, &target, Decision::Rollback).await
}

/// `abort`: an empty body asks for a rollback with no reason.
pub async fn abort(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(reach): Extension<Reach>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: borealis_api::AbortDeployment =
        if body.is_empty() { borealis_api::AbortDeployment::default() } else { json_body(&body)? };
    within_reach(&state, &reach, &id).await?;
    let by = &principal.actor.name;
    let view = state.deployments.abort(&id, request.reason.as_deref(), request.rollback, by).await?;
    Ok((StatusCode::ACCEPTED, Json(describe(&view))).into_response())
}

/// `continue`: an analysis step held for a decision lets its target proceed.
pub async fn proceed(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(reach): Extension<Reach>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, (&principal, &reach), &id, &target, Decision::Continue).await
}

/// Who decides, as the engine checks it: the caller's roles in the
/// deployment's team, and whether that team forbids approving one's own.
/// A person's groups count as roles there: `requiresRoles` may name either.
pub(crate) async fn decider(state: &AppState, principal: &Principal, team: &str) -> Result<Decider, Problem> {
    let grants = &principal.grants;
    let roles = grants.roles.iter().filter(|(t, _)| t == team).map(|(_, r)| r.as_str().to_owned());
    let settings = state.store.team(team).await?;
    Ok(Decider {
        id: principal.actor.label(),
        name: principal.actor.name.clone(),
        roles: roles.chain(principal.groups.iter().cloned()).collect(),
        unrestricted: grants.organization_admin,
        self_approval_forbidden: settings.is_some_and(|t| t.forbid_self_approval),
    })
}

async fn decide(
    state: &AppState,
    (principal, reach): (&Principal, &Reach),
    id: &str,
    target: &str,
    decision: Decision,
) -> Result<Response, Problem> {
    let record = within_reach(state, reach, id).await?;
    let by = decider(state, principal, &record.team).await?;
    let decided = state.deployments.decide(id, target, decision, &by).await?;
    let decision = match decision {
        Decision::Approve => borealis_api::Decision::Approved,
        Decision::Reject => borealis_api::Decision::Rejected,
        Decision::Continue => borealis_api::Decision::Continue,
        Decision::Rollback => borealis_api::Decision::Rollback,
    };
    let mut taken = borealis_api::DecisionTaken {
        deployment: id.to_owned(),
        target: target.to_owned(),
        decision,
        approved_by: None,
        required_approvals: None,
    };
    if let Decided::Counted { approved_by, required } = decided {
        (taken.approved_by, taken.required_approvals) = (Some(approved_by), Some(required));
        return Ok((StatusCode::ACCEPTED, Json(taken)).into_response());
    }
    Ok(Json(taken).into_response())
}

/// A deployment as the API shows it: targets, their webhook runs, history.
pub(crate) fn describe(view: &DeploymentView) -> borealis_api::Deployment {
    let time = rfc3339;
    let record = &view.record;
    let file = borealis_core::deployment::parse_with(&record.file, UnknownFields::Warn).ok().map(|p| p.file);
    let caller = Inputs::decode(&record.context);
    let told = match &file {
        Some(file) => caller.over(file),
        None => caller,
    };
    let pending: Vec<String> =
        view.pending_approvals.iter().filter(|(_, k)| !is_decision(k)).map(|(target, _)| target.clone()).collect();
    let decisions: Vec<String> =
        view.pending_approvals.iter().filter(|(_, k)| is_decision(k)).map(|(target, _)| target.clone()).collect();
    let runs_by_id: HashMap<&str, &RunRecord> = view.runs.iter().map(|run| (run.id.as_str(), run)).collect();
    let mut target_values = Vec::new();
    let journal = Journal::new(view.journal.iter().cloned());
    for target in &view.targets {
        let runs: Vec<borealis_api::TargetWebhookRun> = journal
            .runs_of(&target.target)
            .filter_map(|run_id| runs_by_id.get(run_id))
            .map(|run| borealis_api::TargetWebhookRun {
                id: run.id.clone(),
                webhook: run.webhook.clone(),
                state: run.state,
                md_message: run.md_message.clone(),
                reason: run.reason.clone(),
            })
            .collect();
        target_values.push(borealis_api::Target {
            name: target.target.clone(),
            state: target.state,
            step: target.step.clone(),
            reason: target.reason.clone(),
            updated_at: time(target.updated_at),
            webhook_runs: runs,
            analysis_runs: journal.judgments_of(&target.target),
        });
    }
    let events: Vec<borealis_api::DeploymentEvent> = view
        .events
        .iter()
        .map(|e| borealis_api::DeploymentEvent {
            at: time(e.at),
            target: e.target.clone(),
            kind: e.kind.clone(),
            message: e.message.clone(),
        })
        .collect();
    borealis_api::Deployment {
        id: record.id.clone(),
        team: record.team.clone(),
        application: record.application.clone(),
        state: record.state,
        reason: record.reason.clone(),
        created_at: time(record.created_at),
        finished_at: record.finished_at.map(time),
        approvals: approval_progress(view, file.as_ref()),
        pending_approvals: pending,
        pending_decisions: decisions,
        targets: target_values,
        events,
        context: told.context,
        artifacts: told.artifacts,
        started_by: told.started_by,
        abort: record.abort.as_ref().map(|abort| borealis_api::AbortRequested {
            reason: abort.reason.clone(),
            rollback: abort.rollback,
            requested_at: time(abort.requested_at),
            requested_by: abort.requested_by.clone(),
        }),
        warnings: None,
    }
}

/// Each pending manual approval's voters, and how many it needs.
fn approval_progress(
    view: &DeploymentView,
    file: Option<&borealis_core::deployment::DeploymentFile>,
) -> Vec<borealis_api::ApprovalProgress> {
    view.pending_approvals
        .iter()
        .filter(|(_, key)| !is_decision(key))
        .map(|(target, key)| borealis_api::ApprovalProgress {
            target: target.clone(),
            approved_by: view.approval_votes.iter().filter(|(k, _)| k == key).map(|(_, v)| v.name.clone()).collect(),
            required_approvals: file.map_or(1, |file| journal::required_approvals(file, key)),
        })
        .collect()
}
