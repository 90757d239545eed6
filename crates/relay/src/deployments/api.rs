//! `/api/v1/deployments` and approvals.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use borealis_store::{DeploymentView, RunRecord};
use serde_json::json;

use super::{Decision, is_decision};
use crate::api::{Problem, WaitQuery, json_body, rfc3339};
use crate::state::AppState;

#[derive(serde::Deserialize)]
pub struct CreateDeployment {
    /// The deployment file's text.
    file: String,
    #[serde(default)]
    context: BTreeMap<String, String>,
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: CreateDeployment = json_body(&body)?;
    let idempotency = crate::api::idempotency_key(&headers, &body)?;
    let started = state.deployments.create(&request.file, &request.context, idempotency.as_ref()).await?;
    if started.replayed {
        return Ok(crate::api::created(Json(describe(&started.view)), true));
    }
    let mut value = describe(&started.view);
    value["warnings"] = json!(started.warnings);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let listed = state.deployments.list(100).await?;
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
    let view = state.deployments.view_when_finished(&id, deadline).await?;
    Ok(Json(describe(&view)).into_response())
}

pub async fn approve(
    State(state): State<Arc<AppState>>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, &id, &target, Decision::Approve).await
}

pub async fn reject(
    State(state): State<Arc<AppState>>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, &id, &target, Decision::Reject).await
}

/// `rollback`: an analysis step held for a decision rolls its target back.
pub async fn rollback(
    State(state): State<Arc<AppState>>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, &id, &target, Decision::Rollback).await
}

/// `continue`: an analysis step held for a decision lets its target proceed.
pub async fn proceed(
    State(state): State<Arc<AppState>>,
    Path((id, target)): Path<(String, String)>,
) -> Result<Response, Problem> {
    decide(&state, &id, &target, Decision::Continue).await
}

async fn decide(state: &AppState, id: &str, target: &str, decision: Decision) -> Result<Response, Problem> {
    state.deployments.decide(id, target, decision).await?;
    Ok(Json(json!({ "deployment": id, "target": target, "decision": decision.as_str() })).into_response())
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
