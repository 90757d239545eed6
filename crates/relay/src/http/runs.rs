//! `/api/v1/webhook-runs` and the callback route.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use std::time::SystemTime;

use borealis_store::{Attempt, RunRecord};

use super::AppState;
use super::authorize::{ActingTeam, Reach};
use super::extract::{self, QueryOf, WaitQuery, idempotency_key, json_body};
use super::problem::Problem;
use crate::access::principal::Principal;
use crate::auth::{self, AuthError};
use crate::preflight::RelayPreflight;
use borealis_core::deployment::UnknownFields;
use borealis_core::team::AgentRef;
use borealis_engine::clock::rfc3339;
use borealis_engine::runs::create::RunRequest;
use borealis_engine::runs::{RunError, RunSpec};

/// `POST /api/v1/webhook-runs/dry-run`: the call the run would make, checked.
pub async fn dry_run(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let borealis_api::CreateWebhookRun { file, name, environment, context, allow_unknown_fields } = json_body(&body)?;
    let unknown_fields = UnknownFields::allowed_if(allow_unknown_fields);
    let request = RunRequest { team, file, name, environment, context, link: None, idempotency: None, unknown_fields };
    let plan = state.runs.plan(request, &RelayPreflight::new(&state)).await?;
    Ok(Json(plan).into_response())
}

pub async fn create_run(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let borealis_api::CreateWebhookRun { file, name, environment, context, allow_unknown_fields } = json_body(&body)?;
    let idempotency = idempotency_key(&headers, &body)?;
    let unknown_fields = UnknownFields::allowed_if(allow_unknown_fields);
    let request =
        RunRequest { team: team.clone(), file, name, environment, context, link: None, idempotency, unknown_fields };
    let created = state.runs.create(request).await?;
    let run = state.runs.record(&created.id).await?;
    let mut warnings = created.warnings;
    let agent = serde_json::from_str::<RunSpec>(&run.spec).ok().and_then(|spec| spec.agent);
    let agent = agent.map(|name| AgentRef::new(team, name));
    warnings.extend(crate::preflight::disconnected_agents(&state, agent.into_iter()).await);
    let mut value = describe(&run, None);
    value.warnings = Some(warnings);
    Ok(extract::created(Json(value), created.replayed))
}

pub async fn list_runs(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    QueryOf(query): QueryOf<extract::ListQuery>,
) -> Result<Response, Problem> {
    Ok(Json(run_list(&state, Some(team), &query).await?).into_response())
}

/// The page of runs `query` asks for: of `team`, or of every team.
pub(crate) async fn run_list(
    state: &AppState,
    team: Option<String>,
    query: &extract::ListQuery,
) -> Result<borealis_api::WebhookRunList, Problem> {
    let page = query.page(team, |s| borealis_api::RunState::parse(s).is_some(), query.webhook.as_ref(), 200)?;
    let runs = state.runs.list(&page).await?;
    let last = runs.last().map(|run| (run.created_at, run.id.as_str()));
    let next = extract::next_cursor(&page, last, runs.len());
    Ok(borealis_api::WebhookRunList { runs: runs.iter().map(|run| describe(run, None)).collect(), next })
}

pub async fn show_run(
    State(state): State<Arc<AppState>>,
    Extension(reach): Extension<Reach>,
    Path(id): Path<String>,
    QueryOf(query): QueryOf<WaitQuery>,
) -> Result<Response, Problem> {
    let deadline = query.deadline()?;
    within_reach(&state, &reach, &id).await?;
    let view = state.runs.view_when_finished(&id, deadline).await?;
    Ok(Json(describe(&view.run, Some(&view.attempts))).into_response())
}

/// Ends an unfinished run as cancelled. A later callback gets 409.
pub async fn cancel_run(
    State(state): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Extension(reach): Extension<Reach>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    within_reach(&state, &reach, &id).await?;
    let view = state.runs.cancel(&id, &format!("cancelled by {}", principal.actor.name)).await?;
    tracing::info!(run = id.as_str(), "webhook run cancelled");
    Ok(Json(describe(&view.run, Some(&view.attempts))).into_response())
}

/// Run `id`, if the caller may reach it in its team; else it is answered
/// as unknown.
async fn within_reach(state: &AppState, reach: &Reach, id: &str) -> Result<RunRecord, Problem> {
    let run = state.runs.record(id).await?;
    if !reach.holds(&run.team) {
        return Err(RunError::Unknown(id.to_owned()).into());
    }
    Ok(run)
}

fn unauthorized(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

/// The largest callback body read: `{"success": ..., "mdMessage": "..."}`
/// with a long Markdown report.
pub const MAX_CALLBACK_BYTES: usize = 1 << 20;

/// Why a callback body is not a [`borealis_api::CallbackRequest`], naming
/// the field at fault where serde's message does not.
fn callback_error(body: &[u8], err: serde_json::Error) -> String {
    const SEND: &str = "send {\"success\": true|false, \"mdMessage\": \"...\"}";
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return format!("the body is not JSON: {err}; {SEND}");
    };
    match (value.get("success"), value.get("mdMessage")) {
        (None, _) if value.is_object() => format!("success is required: {SEND}"),
        (Some(success), _) if !success.is_boolean() => format!("success must be true or false, found {success}"),
        (_, Some(message)) if !message.is_string() && !message.is_null() => {
            format!("mdMessage must be a string, found {message}")
        }
        _ => format!("the body is not a callback: {err}; {SEND}"),
    }
}

/// `POST <callbackUri>/callback`: the external system's verdict. The token
/// is checked before any of the body is read.
pub async fn callback(
    State(state): State<Arc<AppState>>,
    Path(callback_id): Path<String>,
    remote: Option<axum::Extension<crate::serve::RemoteAddr>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, Problem> {
    let peer = remote.map(|r| r.0.0.ip());
    let refused = |detail: String, id: Option<&str>| {
        state.metrics.engine.callback_refused();
        match state.auth_guard.failed(peer, "callback_token", id, &detail) {
            Some(wait) => super::problem::too_many_failures_problem(wait),
            None => unauthorized(detail),
        }
    };
    let token = auth::bearer(headers.get(header::AUTHORIZATION)).ok_or_else(|| {
        refused("missing bearer token: get one from POST /oauth/token with your client credentials".into(), None)
    })?;
    let claims = state.auth.verify(token).map_err(|e| refused(format!("invalid token: {e}"), None))?;
    if claims.is_agent() {
        return Err(refused(
            "this token was issued to an agent credential; callbacks need a client credential (borealis clients create NAME)"
                .into(),
            Some(&claims.client_id),
        ));
    }
    match state.auth.ensure_active(&claims).await {
        Ok(()) => {}
        Err(AuthError::Store(err)) => return Err(err.into()),
        Err(err) => return Err(refused(format!("invalid token: {err}"), Some(&claims.client_id))),
    }
    let body = axum::body::to_bytes(body, MAX_CALLBACK_BYTES).await.map_err(|e| {
        Problem::bad_request(
            "invalid-callback",
            format!("the body could not be read (at most {MAX_CALLBACK_BYTES} bytes, sent in time): {e}"),
        )
    })?;
    let verdict: borealis_api::CallbackRequest = serde_json::from_slice(&body)
        .map_err(|err| Problem::bad_request("invalid-callback", callback_error(&body, err)))?;
    let borealis_api::CallbackRequest { success, md_message } = verdict;
    let accepted = state.runs.callback(&callback_id, success, md_message, (&claims.team, &claims.sub)).await?;
    let reply = borealis_api::CallbackAccepted {
        run_id: accepted.run_id,
        state: accepted.state,
        repeat: accepted.repeat.then_some(true),
    };
    Ok(Json(reply).into_response())
}

/// A run as the API shows it; with its attempts, also the attempt log and
/// the last request sent.
pub fn describe(run: &RunRecord, attempts: Option<&[Attempt]>) -> borealis_api::WebhookRun {
    let time = |t: Option<SystemTime>| t.map(rfc3339);
    let spec: Option<RunSpec> = serde_json::from_str(&run.spec).ok();
    borealis_api::WebhookRun {
        id: run.id.clone(),
        team: run.team.clone(),
        webhook: run.webhook.clone(),
        environment: run.environment.clone(),
        state: run.state,
        success: run.success,
        md_message: run.md_message.clone(),
        reason: run.reason.clone(),
        attempts: run.attempts,
        network_mode: spec.as_ref().map(|s| s.webhook.network_mode),
        agent: spec.as_ref().and_then(|s| s.agent.clone()),
        deployment_id: spec.as_ref().and_then(|s| s.deployment_id.clone()),
        callback_uri: spec.as_ref().and_then(|s| s.armory.get("callbackUri").cloned()),
        created_at: rfc3339(run.created_at),
        updated_at: rfc3339(run.updated_at),
        next_attempt_at: time(run.next_attempt_at),
        deadline_at: time(run.deadline_at),
        callback_at: time(run.callback_at),
        finished_at: time(run.finished_at),
        attempt_log: attempts.map(|attempts| {
            attempts
                .iter()
                .map(|a| borealis_api::Attempt {
                    number: a.number,
                    started_at: rfc3339(a.started_at),
                    latency_ms: a.latency_ms,
                    status: a.status,
                    error: a.error.clone(),
                    reply: a.reply.clone(),
                })
                .collect()
        }),
        request: attempts.map(|_| run.request.as_deref().and_then(|r| serde_json::from_str(r).ok())),
        warnings: None,
    }
}
