//! `/api/v1/deployments` and approvals.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use borealis_core::deployment;
use borealis_store::{ApprovalState, Conflict, DeploymentRecord, DeploymentView, RunRecord, StoreError, TargetState};
use serde_json::json;

use crate::api::{Problem, WaitQuery, changed, json_body, rfc3339};
use crate::state::AppState;

#[derive(serde::Deserialize)]
pub struct CreateDeployment {
    /// The deployment file's text.
    file: String,
    #[serde(default)]
    context: BTreeMap<String, String>,
}

fn invalid(detail: String, errors: Vec<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-deployment", detail).with_errors(errors)
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: CreateDeployment = json_body(&body)?;
    let idempotency = crate::api::idempotency_key(&headers, &body)?;
    let parsed = deployment::parse(&request.file).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        invalid(format!("the deployment file is invalid:\n{}", lines.join("\n")), lines)
    })?;
    let mut errors: Vec<String> = deployment::validate_deployment(&parsed.file).iter().map(|e| e.to_string()).collect();
    if parsed.file.application.is_none() {
        errors.insert(0, "application: a deployment needs an application name".into());
    }
    let secrets = state.vault.all().await.map_err(Problem::internal)?;
    errors.extend(crate::signing::check_file(&state.config, &parsed.file, &secrets));
    errors.extend(check_providers(&state, &parsed.file).await?);
    if !errors.is_empty() {
        return Err(invalid(format!("the deployment cannot run:\n{}", errors.join("\n")), errors));
    }
    let application = parsed.file.application.clone().expect("checked");
    let id = uuid::Uuid::new_v4().to_string();
    let context = serde_json::to_string(&request.context).expect("json");
    let inserted =
        state.store.insert_deployment(&id, &application, &request.file, &context, idempotency.as_ref()).await;
    match inserted {
        Ok(()) => {}
        Err(StoreError::Conflict(Conflict::IdempotencyKeyUsed { id, same_request: true })) => {
            return Ok(crate::api::created(Json(describe(&find_view(&state, &id).await?)), true));
        }
        Err(StoreError::Conflict(conflict @ Conflict::DeploymentInProgress { .. })) => {
            return Err(Problem::new(StatusCode::CONFLICT, "deployment-in-progress", conflict.to_string()));
        }
        Err(other) => return Err(crate::api::store_problem(other)),
    }
    for target in &parsed.file.targets {
        state
            .store
            .set_target(&id, &target.name, TargetState::Waiting, Some("waiting to start"), None)
            .await
            .map_err(Problem::internal)?;
    }
    tracing::info!(deployment = %id, %application, "deployment started");
    tokio::spawn(super::orchestrator::run(state.clone(), id.clone()));
    let mut value = describe(&find_view(&state, &id).await?);
    value["warnings"] = json!(parsed.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>());
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// Every analysis step's provider must be defined on this relay.
async fn check_providers(state: &AppState, file: &deployment::DeploymentFile) -> Result<Vec<String>, Problem> {
    let analyses = file.analyses();
    if analyses.is_empty() {
        return Ok(Vec::new());
    }
    let providers = state.store.providers().await.map_err(Problem::internal)?;
    let names: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    let mut errors = Vec::new();
    for analysis in analyses {
        let Some(provider) = file.provider_of(analysis) else { continue };
        if !names.contains(&provider.name.as_str()) {
            let defined =
                if names.is_empty() { "none is defined".to_owned() } else { format!("defined: {}", names.join(", ")) };
            let at = &provider.location;
            errors.push(
                deployment::Diagnostic {
                    path: at.path.clone(),
                    message: format!(
                        "unknown metric provider {:?} ({defined}; create it with borealis providers create)",
                        provider.name
                    ),
                    line: at.line,
                    column: at.column,
                }
                .to_string(),
            );
        }
    }
    Ok(errors)
}

pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let listed = state.store.deployments(100).await.map_err(Problem::internal)?;
    let mut items = Vec::with_capacity(listed.len());
    for (record, targets) in &listed {
        items.push(json!({
            "id": record.id,
            "application": record.application,
            "state": record.state,
            "reason": record.reason,
            "createdAt": rfc3339(record.created_at),
            "targets": targets.iter().map(|t| json!({ "name": t.target, "state": t.state })).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({ "deployments": items })).into_response())
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Response, Problem> {
    let deadline = query.deadline()?;
    let mut changes = state.deployment_events.subscribe();
    loop {
        // The record alone while waiting; the whole view once, to answer.
        let record = find_deployment(&state, &id).await?;
        if record.finished_at.is_some() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(describe(&find_view(&state, &id).await?)).into_response());
        }
        changed(&mut changes, &id, deadline).await;
    }
}

fn unknown_deployment(id: &str) -> String {
    format!("no deployment {id:?}")
}

/// The deployment `id`, or a 404 naming it.
async fn find_deployment(state: &AppState, id: &str) -> Result<DeploymentRecord, Problem> {
    Problem::found(state.store.deployment(id).await, "unknown-deployment", || unknown_deployment(id))
}

/// The deployment `id` with all it shows, as of one moment, or a 404 naming it.
async fn find_view(state: &AppState, id: &str) -> Result<DeploymentView, Problem> {
    Problem::found(state.store.deployment_view(id).await, "unknown-deployment", || unknown_deployment(id))
}

pub async fn approve(
    State(state): State<Arc<AppState>>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, &id, &target, ApprovalState::Approved, false).await
}

pub async fn reject(
    State(state): State<Arc<AppState>>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, &id, &target, ApprovalState::Rejected, false).await
}

/// `rollback`: an analysis step held for a decision rolls its target back.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, &id, &target, ApprovalState::Rejected, true).await
}

/// `continue`: an analysis step held for a decision lets its target proceed.
pub async fn proceed(
    State(state): State<Arc<AppState>>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, &id, &target, ApprovalState::Approved, true).await
}

fn is_decision(step_key: &str) -> bool {
    step_key.ends_with(borealis_store::DECISION_SUFFIX)
}

async fn decide(
    state: &Arc<AppState>,
    id: &str,
    target: &str,
    decision: ApprovalState,
    decisions: bool,
) -> Result<Response, Problem> {
    let record = find_deployment(state, id).await?;
    let decided = state.store.decide_approvals(id, target, decision, decisions).await.map_err(Problem::internal)?;
    if decided == 0 && decisions {
        let view = find_view(state, id).await?;
        let waiting: Vec<&str> =
            view.pending_approvals.iter().filter(|(_, k)| is_decision(k)).map(|(t, _)| t.as_str()).collect();
        let known = view.targets.iter().any(|t| t.target == target);
        let detail = if !known {
            format!("deployment {id} has no target {target:?}")
        } else {
            let others =
                if waiting.is_empty() { "no target is".to_owned() } else { format!("waiting: {}", waiting.join(", ")) };
            format!(
                "target {target:?} of deployment {id} is not waiting for a rollback or continue decision ({others})"
            )
        };
        return Err(Problem::new(StatusCode::CONFLICT, "not-awaiting-decision", detail));
    }
    if decided == 0 {
        let view = find_view(state, id).await?;
        let waiting: Vec<&str> =
            view.pending_approvals.iter().filter(|(_, k)| !is_decision(k)).map(|(t, _)| t.as_str()).collect();
        let known = view.targets.iter().any(|t| t.target == target);
        let detail = if !known {
            format!("deployment {id} has no target {target:?}")
        } else if waiting.is_empty() {
            format!("target {target:?} of deployment {id} is not waiting for approval (no target is)")
        } else {
            format!(
                "target {target:?} of deployment {id} is not waiting for approval (waiting: {})",
                waiting.join(", ")
            )
        };
        return Err(Problem::new(StatusCode::CONFLICT, "not-awaiting-approval", detail));
    }
    state.deployment_changed(id);
    let said = match (decisions, decision) {
        (false, _) => decision.as_str(),
        (true, ApprovalState::Approved) => "continue",
        (true, _) => "rollback",
    };
    tracing::info!(deployment = %id, target, decision = said, "decision taken");
    Ok(Json(json!({ "deployment": record.id, "target": target, "decision": said })).into_response())
}

/// A deployment as the API shows it: targets, their webhook runs, history.
fn describe(view: &DeploymentView) -> serde_json::Value {
    let time = rfc3339;
    let record = &view.record;
    let pending: Vec<&str> =
        view.pending_approvals.iter().filter(|(_, k)| !is_decision(k)).map(|(target, _)| target.as_str()).collect();
    let decisions: Vec<&str> =
        view.pending_approvals.iter().filter(|(_, k)| is_decision(k)).map(|(target, _)| target.as_str()).collect();
    let runs_by_id: HashMap<&str, &RunRecord> = view.runs.iter().map(|run| (run.id.as_str(), run)).collect();
    let mut target_values = Vec::new();
    for target in &view.targets {
        let runs: Vec<serde_json::Value> = view
            .journal
            .iter()
            .filter(|(key, _)| super::orchestrator::is_run_key_of(key, &target.target))
            .filter_map(|(_, run_id)| runs_by_id.get(run_id.as_str()))
            .map(|run| {
                json!({
                    "id": run.id,
                    "webhook": run.webhook,
                    "state": run.state,
                    "mdMessage": run.md_message,
                    "reason": run.reason,
                })
            })
            .collect();
        target_values.push(json!({
            "name": target.target,
            "state": target.state,
            "step": target.step,
            "reason": target.reason,
            "updatedAt": time(target.updated_at),
            "webhookRuns": runs,
            "analysisRuns": super::orchestrator::judgments_of(&view.journal, &target.target),
        }));
    }
    let events: Vec<serde_json::Value> = view
        .events
        .iter()
        .map(|e| json!({ "at": time(e.at), "target": e.target, "kind": e.kind, "message": e.message }))
        .collect();
    json!({
        "id": record.id,
        "application": record.application,
        "state": record.state,
        "reason": record.reason,
        "createdAt": time(record.created_at),
        "finishedAt": record.finished_at.map(time),
        "pendingApprovals": pending,
        "pendingDecisions": decisions,
        "targets": target_values,
        "events": events,
    })
}
