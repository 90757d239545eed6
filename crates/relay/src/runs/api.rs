//! Routes for runs, secrets and callbacks.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use borealis_core::Secret;
use serde_json::json;

use super::RunRequest;
use super::engine::describe;
use crate::api::{Problem, WaitQuery, json_body};
use crate::auth::{self, AuthError};
use crate::state::AppState;
use crate::vault;

#[derive(Debug, serde::Deserialize)]
struct CreateRun {
    file: String,
    name: String,
    environment: Option<String>,
    #[serde(default)]
    context: std::collections::BTreeMap<String, String>,
}

pub async fn create_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let CreateRun { file, name, environment, context } = json_body(&body)?;
    let idempotency = crate::api::idempotency_key(&headers, &body)?;
    let request = RunRequest { file, name, environment, context, link: None, idempotency };
    let created = state.runs.create(request).await?;
    let run = state.runs.record(&created.id).await?;
    let mut value = describe(&run, None);
    value["warnings"] = json!(created.warnings);
    Ok(crate::api::created(Json(value), created.replayed))
}

pub async fn list_runs(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let runs = state.runs.list(200).await?;
    let items: Vec<serde_json::Value> = runs.iter().map(|run| describe(run, None)).collect();
    Ok(Json(json!({ "runs": items })).into_response())
}

pub async fn show_run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Response, Problem> {
    let deadline = query.deadline()?;
    let view = state.runs.view_when_finished(&id, deadline).await?;
    Ok(Json(describe(&view.run, Some(&view.attempts))).into_response())
}

/// Ends an unfinished run as cancelled. A later callback gets 409.
pub async fn cancel_run(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let view = state.runs.cancel(&id, "cancelled by an operator").await?;
    tracing::info!(run = %id, "webhook run cancelled");
    Ok(Json(describe(&view.run, Some(&view.attempts))).into_response())
}

pub async fn put_secret(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    vault::validate_name(&name).map_err(|e| Problem::bad_request("invalid-secret-name", e))?;
    let value = String::from_utf8(body.to_vec())
        .map_err(|_| Problem::bad_request("invalid-secret", "the secret value must be UTF-8 text"))?;
    if value.is_empty() {
        return Err(Problem::bad_request("invalid-secret", "the secret value is empty"));
    }
    state.vault.set(&name, &Secret::new(value)).await.map_err(Problem::internal)?;
    tracing::info!(secret = %name, "secret stored");
    Ok(Json(json!({ "name": name, "stored": true })).into_response())
}

pub async fn list_secrets(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let names = state.vault.names().await.map_err(Problem::internal)?;
    let items: Vec<serde_json::Value> =
        names.into_iter().map(|(name, at)| json!({ "name": name, "updatedAt": crate::api::rfc3339(at) })).collect();
    Ok(Json(json!({ "secrets": items })).into_response())
}

pub async fn delete_secret(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, Problem> {
    if state.vault.delete(&name).await.map_err(Problem::internal)? {
        Ok(Json(json!({ "name": name, "deleted": true })).into_response())
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, "unknown-secret", format!("no secret named {name:?}")))
    }
}

fn unauthorized(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

/// `POST <callbackUri>/callback`: the external system's verdict.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    Path(callback_id): Path<String>,
    remote: Option<axum::Extension<crate::serve::RemoteAddr>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let peer = remote.map(|r| r.0.0.ip());
    let refused = |detail: String| {
        state.auth_guard.failed(peer, "callback_token", &detail);
        unauthorized(detail)
    };
    let token = auth::bearer(headers.get(header::AUTHORIZATION)).ok_or_else(|| {
        refused("missing bearer token: get one from POST /oauth/token with your client credentials".into())
    })?;
    let claims = state.auth.verify(token).map_err(|e| refused(format!("invalid token: {e}")))?;
    if claims.is_agent() {
        return Err(refused(
            "this token was issued to an agent credential; callbacks need a client credential (borealis clients create NAME)"
                .into(),
        ));
    }
    match state.auth.ensure_active(&claims).await {
        Ok(()) => {}
        Err(AuthError::Store(err)) => return Err(Problem::internal(err)),
        Err(err) => return Err(refused(format!("invalid token: {err}"))),
    }
    let verdict: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        Problem::bad_request(
            "invalid-callback",
            format!("the body is not JSON: {e}; send {{\"success\": true|false, \"mdMessage\": \"...\"}}"),
        )
    })?;
    let success = match verdict.get("success") {
        Some(serde_json::Value::Bool(success)) => *success,
        Some(other) => {
            return Err(Problem::bad_request(
                "invalid-callback",
                format!("success must be true or false, found {other}"),
            ));
        }
        None => {
            return Err(Problem::bad_request(
                "invalid-callback",
                "success is required: send {\"success\": true|false}",
            ));
        }
    };
    let md_message = match verdict.get("mdMessage") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.clone()),
        Some(other) => {
            return Err(Problem::bad_request("invalid-callback", format!("mdMessage must be a string, found {other}")));
        }
    };
    let accepted = state.runs.callback(&callback_id, success, md_message, &claims.sub).await?;
    let mut reply = json!({ "runId": accepted.run_id, "state": accepted.state });
    if accepted.repeat {
        reply["repeat"] = json!(true);
    }
    Ok(Json(reply).into_response())
}
