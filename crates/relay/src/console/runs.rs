//! The Webhook runs screens: the newest runs, and one run with every
//! attempt and its `mdMessage`.

use std::sync::Arc;

use askama::Template;
use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};

use super::markdown;
use super::page::{Chrome, Failure, Filters, Operator, render, segment, state_words, when};
use crate::http::extract::{ListQuery, QueryOf};
use crate::http::runs::describe;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/runs.html")]
struct ListPage {
    chrome: Chrome,
    runs: Vec<Row>,
    filters: Filters,
}

struct Row {
    id: String,
    webhook: String,
    environment: Option<String>,
    state: (String, String),
    network_mode: String,
    agent: String,
    created_at: String,
}

#[derive(Template)]
#[template(path = "console/run.html")]
struct DetailPage {
    chrome: Chrome,
    run: Row,
    reason: Option<String>,
    /// Whether the reason is what went wrong (not a callback's verdict).
    reason_is_error: bool,
    success: Option<bool>,
    message: Option<String>,
    callback_uri: Option<String>,
    /// The deployment whose step this run is.
    deployment_id: Option<String>,
    updated_at: String,
    next_attempt_at: Option<String>,
    deadline_at: Option<String>,
    finished_at: Option<String>,
    /// The last request sent, as recorded: secrets masked.
    request: Option<borealis_api::RecordedRequest>,
    attempts: Vec<AttemptRow>,
}

struct AttemptRow {
    number: u32,
    started_at: String,
    latency: String,
    status: String,
    error: Option<String>,
    reply: Option<String>,
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    QueryOf(query): QueryOf<ListQuery>,
) -> Result<Response, Failure> {
    let listed = crate::http::runs::run_list(
        &state,
        Some(operator.team.clone()),
        &ListQuery { limit: query.limit.or(Some(50)), ..query.clone() },
    )
    .await?;
    let states: Vec<&str> = borealis_api::RunState::ALL.iter().map(|s| s.as_str()).collect();
    let filters = Filters::new(("runs", "Webhook", "webhook"), &query, query.webhook.as_ref(), &states, listed.next);
    let runs = listed.runs.iter().map(row).collect();
    Ok(render(&ListPage { chrome: Chrome::new("runs", &operator), runs, filters }, StatusCode::OK))
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let view = state.runs.view(&id).await?;
    let run = describe(&view.run, Some(&view.attempts));
    let attempts = run
        .attempt_log
        .iter()
        .flatten()
        .map(|a| AttemptRow {
            number: a.number,
            started_at: when(&a.started_at),
            latency: format!("{} ms", a.latency_ms),
            status: a.status.map(|s| s.to_string()).unwrap_or_else(|| "—".into()),
            error: a.error.clone(),
            reply: a.reply.clone(),
        })
        .collect();
    let page = DetailPage {
        chrome: Chrome::new("runs", &operator),
        run: row(&run),
        reason: run.reason.clone(),
        reason_is_error: run.success.is_none()
            && matches!(run.state, borealis_api::RunState::Failed | borealis_api::RunState::TimedOut),
        success: run.success,
        message: run.md_message.as_deref().map(markdown::render),
        callback_uri: run.callback_uri.clone(),
        deployment_id: run.deployment_id.clone(),
        updated_at: when(&run.updated_at),
        next_attempt_at: run.next_attempt_at.as_deref().map(when),
        deadline_at: run.deadline_at.as_deref().map(when),
        finished_at: run.finished_at.as_deref().map(when),
        request: run.request.clone().flatten(),
        attempts,
    };
    Ok(render(&page, StatusCode::OK))
}

/// Ends an unfinished run as cancelled.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Redirect, Failure> {
    let by = &operator.principal.actor.name;
    state.runs.cancel(&id, &format!("cancelled by {by}")).await?;
    Ok(Redirect::to(&format!("/runs/{}", segment(&id))))
}

fn row(run: &borealis_api::WebhookRun) -> Row {
    Row {
        id: run.id.clone(),
        webhook: run.webhook.clone(),
        environment: run.environment.clone(),
        state: state_words(&run.state),
        network_mode: run.network_mode.as_ref().map(|m| state_words(m).1).unwrap_or_default(),
        agent: run.agent.clone().unwrap_or_default(),
        created_at: when(&run.created_at),
    }
}
