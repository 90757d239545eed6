//! The Audit screen: the trail, newest first, filtered by actor and action,
//! a page at a time.

use std::sync::Arc;

use crate::http::extract::QueryOf;
use askama::Template;
use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::page::{Chrome, Failure, Operator, render, when};
use crate::http::identities::{AuditParams, audit_list};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    entries: Vec<Row>,
    actor: String,
    action: String,
    /// The query of the next (older) page.
    older: Option<String>,
}

struct Row {
    time: String,
    actor: String,
    team: String,
    action: String,
    object: String,
    outcome: String,
    status: u16,
    source: String,
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    QueryOf(params): QueryOf<AuditParams>,
) -> Result<Response, Failure> {
    let params = AuditParams { limit: params.limit.or(Some(50)), ..params };
    // The console is the admin token's: every team's entries.
    let listed = audit_list(&state, true, borealis_store::DEFAULT_TEAM.to_owned(), &params).await?;
    let actor = params.actor.clone().unwrap_or_default();
    let action = params.action.clone().unwrap_or_default();
    let older = listed.next.map(|before| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("actor", &actor)
            .append_pair("action", &action)
            .append_pair("before", &before)
            .finish()
    });
    let entries = listed
        .entries
        .into_iter()
        .map(|e| Row {
            time: when(&e.time),
            actor: format!("{}: {}", e.actor.kind, e.actor.name),
            team: e.team.unwrap_or_default(),
            action: e.action,
            object: e.object,
            outcome: e.outcome,
            status: e.status,
            source: e.source_address.unwrap_or_default(),
        })
        .collect();
    let page = AuditPage { chrome: Chrome::new("audit", &operator), entries, actor, action, older };
    Ok(render(&page, StatusCode::OK))
}
