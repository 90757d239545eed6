//! Routes for runs, secrets and callbacks.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use borealis_core::Secret;
use borealis_store::{Outcome, RunState, RunView};

use super::create::{self, CreateRun};
use super::engine::{api_state, describe};
use crate::api::{Problem, WaitQuery, changed, json_body};
use crate::auth::{self, AuthError};
use crate::state::AppState;
use crate::vault;

pub async fn create_run(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let borealis_api::CreateWebhookRun { file, name, environment, context } = json_body(&body)?;
    let idempotency = crate::api::idempotency_key(&headers, &body)?;
    let request = CreateRun { file, name, environment, context, link: None, idempotency };
    let created = create::create(&state, request).await?;
    let run = state
        .store
        .run(&created.id)
        .await
        .map_err(Problem::internal)?
        .ok_or_else(|| Problem::internal("run vanished"))?;
    let mut value = describe(&run, None);
    value.warnings = Some(created.warnings);
    Ok(crate::api::created(Json(value), created.replayed))
}

pub async fn list_runs(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let runs = state.store.runs(200).await.map_err(Problem::internal)?;
    let runs = runs.iter().map(|run| describe(run, None)).collect();
    Ok(Json(borealis_api::WebhookRunList { runs }).into_response())
}

pub async fn show_run(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Response, Problem> {
    let deadline = query.deadline()?;
    let mut events = state.engine.subscribe();
    loop {
        let view = find_run(&state, &id).await?;
        if view.run.state.is_finished() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(describe(&view.run, Some(&view.attempts))).into_response());
        }
        changed(&mut events, &id, deadline).await;
    }
}

/// The run `id` with its attempts, or a 404 naming it.
async fn find_run(state: &AppState, id: &str) -> Result<RunView, Problem> {
    Problem::found(state.store.run_view(id).await, "unknown-run", || format!("no webhook run {id:?}"))
}

/// Ends an unfinished run as cancelled. A later callback gets 409.
pub async fn cancel_run(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, Problem> {
    let outcome = Outcome {
        state: RunState::Cancelled,
        success: None,
        md_message: None,
        reason: Some("cancelled by an operator".into()),
        by_callback: false,
    };
    if !state.store.finish(&id, &RunState::UNFINISHED, &outcome).await.map_err(Problem::internal)? {
        let view = find_run(&state, &id).await?;
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "run-finished",
            format!("run {id} already ended as {}", view.run.state.as_str()),
        ));
    }
    state.engine.changed(&id);
    tracing::info!(run = %id, "webhook run cancelled");
    let view = find_run(&state, &id).await?;
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
    Ok(Json(borealis_api::SecretStored { name, stored: true }).into_response())
}

pub async fn list_secrets(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let names = state.vault.names().await.map_err(Problem::internal)?;
    let secrets = names
        .into_iter()
        .map(|(name, at)| borealis_api::SecretSummary { name, updated_at: crate::api::rfc3339(at) })
        .collect();
    Ok(Json(borealis_api::SecretList { secrets }).into_response())
}

pub async fn delete_secret(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, Problem> {
    if state.vault.delete(&name).await.map_err(Problem::internal)? {
        Ok(Json(borealis_api::SecretDeleted { name, deleted: true }).into_response())
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
    // An external system may echo a secret back in its message.
    let md_message = match md_message {
        Some(text) => Some(state.vault.current_scrubber().await.map_err(Problem::internal)?.scrub(&text).into_owned()),
        None => None,
    };
    let run = Problem::found(state.store.run_by_callback(&callback_id).await, "unknown-run", || {
        "no webhook run has this callback URI".into()
    })?;
    let outcome = Outcome {
        state: if success { RunState::Succeeded } else { RunState::Failed },
        success: Some(success),
        md_message: md_message.clone(),
        reason: Some(format!("callback from {:?}", claims.sub)),
        by_callback: true,
    };
    // Durable before the reply: `finish` commits with synchronous=FULL.
    if state.store.finish(&run.id, &RunState::UNFINISHED, &outcome).await.map_err(Problem::internal)? {
        state.engine.changed(&run.id);
        tracing::info!(run = %run.id, success, md_message = ?md_message, "callback accepted");
        let reply = borealis_api::CallbackAccepted { run_id: run.id, state: api_state(outcome.state), repeat: None };
        return Ok(Json(reply).into_response());
    }
    let now =
        state.store.run(&run.id).await.map_err(Problem::internal)?.ok_or_else(|| Problem::internal("run vanished"))?;
    match (now.callback_at, now.success) {
        (Some(_), Some(first)) if first == success => {
            let reply =
                borealis_api::CallbackAccepted { run_id: now.id, state: api_state(now.state), repeat: Some(true) };
            Ok(Json(reply).into_response())
        }
        (Some(_), Some(first)) => Err(Problem::new(
            StatusCode::CONFLICT,
            "callback-conflict",
            format!("run {} was already decided by a callback with success: {first}", now.id),
        )),
        _ => Err(Problem::new(
            StatusCode::CONFLICT,
            "run-finished",
            format!("run {} already ended as {}: {}", now.id, now.state.as_str(), now.reason.unwrap_or_default()),
        )),
    }
}
