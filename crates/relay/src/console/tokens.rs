//! The Personal tokens screen: a person makes a token for the CLI or a
//! script (shown once), sees theirs, and revokes one; an organization admin
//! sees and revokes anyone's (`?all=true`; the admin token always does).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::page::{Chrome, ConfirmPage, Failure, Operator, correctable, render, segment, when};
use crate::access::personal;
use crate::http::identities::{describe_personal, personal_problem};
use crate::http::problem::Problem;
use crate::state::AppState;

/// The lifetimes offered, in days.
const LIFETIME_DAYS: [u64; 4] = [1, 7, 30, 90];

#[derive(Template)]
#[template(path = "console/tokens.html")]
struct TokensPage {
    chrome: Chrome,
    /// Whether the operator is a person (who may make tokens).
    person: bool,
    /// Whether every person's are shown.
    all: bool,
    /// Whether the operator may see every person's.
    organization_admin: bool,
    tokens: Vec<borealis_api::PersonalToken>,
    /// A token just made: its description, the token, when it expires.
    created: Option<(String, String, String)>,
    error: Option<String>,
    typed: String,
    lifetimes: &'static [u64],
}

impl TokensPage {
    fn when(&self, rfc3339: &str) -> String {
        when(rfc3339)
    }
}

#[derive(Deserialize, Default)]
pub struct TokensQuery {
    #[serde(default)]
    all: bool,
}

#[derive(Deserialize)]
pub struct TokenForm {
    description: String,
    /// Days.
    lifetime: u64,
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Query(query): Query<TokensQuery>,
) -> Result<Response, Failure> {
    let page = tokens_page(&state, &operator, query.all, None, None, String::new()).await?;
    Ok(render(&page, StatusCode::OK))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<TokenForm>,
) -> Result<Response, Failure> {
    let principal = &operator.principal;
    if !principal.grants.person {
        let detail =
            "the admin token is no person: personal tokens are made by people signed in through the identity provider";
        return Err(Failure(Problem::new(StatusCode::FORBIDDEN, "forbidden", detail)));
    }
    let person = borealis_store::Person {
        subject: principal.actor.id.clone(),
        name: principal.actor.name.clone(),
        groups: principal.groups.clone(),
    };
    if !LIFETIME_DAYS.contains(&form.lifetime) {
        let detail = format!("a personal token is good for one of {LIFETIME_DAYS:?} days");
        return Err(Failure(Problem::bad_request("invalid-personal-token", detail)));
    }
    let lifetime = Duration::from_secs(form.lifetime * 86_400);
    let issued = personal::issue(&*state.store, &person, &form.description, lifetime, SystemTime::now()).await;
    match correctable(issued.map_err(personal_problem))? {
        Ok((token, kept)) => {
            tracing::info!(
                person = person.subject.as_str(),
                token = kept.id.as_str(),
                "personal token made in the console"
            );
            let expires = when(&borealis_engine::clock::rfc3339(kept.expires_at));
            let object = crate::http::authorize::AuditedObject(format!("/tokens/{}", kept.id));
            let created = Some((kept.description, token.expose().to_owned(), expires));
            let page = tokens_page(&state, &operator, false, created, None, String::new()).await?;
            let mut response = render(&page, StatusCode::CREATED);
            response.extensions_mut().insert(object);
            Ok(response)
        }
        Err(problem) => {
            let page = tokens_page(&state, &operator, false, None, Some(problem.detail), form.description).await?;
            Ok(render(&page, problem.status))
        }
    }
}

pub async fn confirm_revoke(Extension(operator): Extension<Operator>, Path(id): Path<String>) -> Response {
    let page = ConfirmPage {
        chrome: Chrome::new("tokens", &operator),
        title: format!("Revoke personal token {id}"),
        question: format!("Revoke personal token {id}?"),
        consequence: "It stops working at once: the CLI or script that uses it is refused until it has another.".into(),
        action: format!("/tokens/{}/revoke", segment(&id)),
        button: "Revoke the token".into(),
        cancel: "/tokens".into(),
    };
    render(&page, StatusCode::OK)
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(id): Path<String>,
) -> Result<Redirect, Failure> {
    let revoked =
        personal::revoke(&*state.store, &operator.principal, &id, SystemTime::now()).await.map_err(personal_problem)?;
    tracing::info!(token = revoked.id.as_str(), person = revoked.person.subject.as_str(), "personal token revoked");
    let everyone = revoked.person.subject != operator.principal.actor.id;
    Ok(Redirect::to(if everyone { "/tokens?all=true" } else { "/tokens" }))
}

async fn tokens_page(
    state: &AppState,
    operator: &Operator,
    all: bool,
    created: Option<(String, String, String)>,
    error: Option<String>,
    typed: String,
) -> Result<TokensPage, Failure> {
    let grants = &operator.principal.grants;
    let all = all || !grants.person;
    let now = SystemTime::now();
    let listing = personal::Listing { everyone: all, ..personal::Listing::default() };
    let tokens = personal::list(&*state.store, &operator.principal, &listing, now).await.map_err(personal_problem)?;
    Ok(TokensPage {
        chrome: Chrome::new("tokens", operator),
        person: grants.person,
        all,
        organization_admin: grants.organization_admin,
        tokens: tokens.iter().map(|token| describe_personal(token, now)).collect(),
        created,
        error,
        typed,
        lifetimes: &LIFETIME_DAYS,
    })
}
