//! `/api/v1/deployments` and approvals.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use borealis_core::deployment;
use borealis_store::{ApprovalState, DeploymentRecord, DeploymentView, RunRecord, StoreError};

use crate::api::{Problem, WaitQuery, changed, json_body, rfc3339};
use crate::state::AppState;

fn invalid(detail: String, errors: Vec<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "invalid-deployment", detail).with_errors(errors)
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: borealis_api::CreateDeployment = json_body(&body)?;
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
        Err(StoreError::IdempotencyKeyUsed { id, same_request: true }) => {
            return Ok(crate::api::created(Json(describe(&find_view(&state, &id).await?)), true));
        }
        Err(StoreError::Conflict(message)) => {
            return Err(Problem::new(StatusCode::CONFLICT, "deployment-in-progress", message));
        }
        Err(other) => return Err(crate::api::store_problem(other)),
    }
    for target in &parsed.file.targets {
        state
            .store
            .set_target(&id, &target.name, "waiting", Some("waiting to start"), None)
            .await
            .map_err(Problem::internal)?;
    }
    tracing::info!(deployment = %id, %application, "deployment started");
    tokio::spawn(super::orchestrator::run(state.clone(), id.clone()));
    let mut value = describe(&find_view(&state, &id).await?);
    value.warnings = Some(parsed.warnings.iter().map(|w| w.to_string()).collect());
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
        items.push(borealis_api::DeploymentSummary {
            id: record.id.clone(),
            application: record.application.clone(),
            state: deployment_state(&record.state),
            reason: record.reason.clone(),
            created_at: rfc3339(record.created_at),
            targets: targets
                .iter()
                .map(|t| borealis_api::TargetSummary { name: t.target.clone(), state: target_state(&t.state) })
                .collect(),
        });
    }
    Ok(Json(borealis_api::DeploymentList { deployments: items }).into_response())
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
        (false, ApprovalState::Approved) => borealis_api::Decision::Approved,
        (false, _) => borealis_api::Decision::Rejected,
        (true, ApprovalState::Approved) => borealis_api::Decision::Continue,
        (true, _) => borealis_api::Decision::Rollback,
    };
    tracing::info!(deployment = %id, target, decision = said.as_str(), "decision taken");
    let reply = borealis_api::DecisionTaken { deployment: record.id, target: target.to_owned(), decision: said };
    Ok(Json(reply).into_response())
}

/// The store keeps states as text; one it does not know (a newer relay's,
/// on a shared database) shows as running rather than failing the reply.
fn deployment_state(text: &str) -> borealis_api::DeploymentState {
    text.parse().unwrap_or_else(|err| {
        tracing::warn!(error = %err, "deployment state");
        borealis_api::DeploymentState::Running
    })
}

/// As [`deployment_state`], for a target.
fn target_state(text: &str) -> borealis_api::TargetState {
    text.parse().unwrap_or_else(|err| {
        tracing::warn!(error = %err, "target state");
        borealis_api::TargetState::Running
    })
}

/// A deployment as the API shows it: targets, their webhook runs, history.
fn describe(view: &DeploymentView) -> borealis_api::Deployment {
    let time = rfc3339;
    let record = &view.record;
    let pending: Vec<String> =
        view.pending_approvals.iter().filter(|(_, k)| !is_decision(k)).map(|(target, _)| target.clone()).collect();
    let decisions: Vec<String> =
        view.pending_approvals.iter().filter(|(_, k)| is_decision(k)).map(|(target, _)| target.clone()).collect();
    let runs_by_id: HashMap<&str, &RunRecord> = view.runs.iter().map(|run| (run.id.as_str(), run)).collect();
    let mut target_values = Vec::new();
    for target in &view.targets {
        let runs: Vec<borealis_api::TargetWebhookRun> = view
            .journal
            .iter()
            .filter(|(key, _)| super::orchestrator::is_run_key_of(key, &target.target))
            .filter_map(|(_, run_id)| runs_by_id.get(run_id.as_str()))
            .map(|run| borealis_api::TargetWebhookRun {
                id: run.id.clone(),
                webhook: run.webhook.clone(),
                state: crate::runs::engine::api_state(run.state),
                md_message: run.md_message.clone(),
                reason: run.reason.clone(),
            })
            .collect();
        target_values.push(borealis_api::Target {
            name: target.target.clone(),
            state: target_state(&target.state),
            step: target.step.clone(),
            reason: target.reason.clone(),
            updated_at: time(target.updated_at),
            webhook_runs: runs,
            analysis_runs: super::orchestrator::judgments_of(&view.journal, &target.target),
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
        application: record.application.clone(),
        state: deployment_state(&record.state),
        reason: record.reason.clone(),
        created_at: time(record.created_at),
        finished_at: record.finished_at.map(time),
        pending_approvals: pending,
        pending_decisions: decisions,
        targets: target_values,
        events,
        warnings: None,
    }
}
