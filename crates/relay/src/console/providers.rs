//! The Metric providers screen: the providers analysis steps query, one
//! defined from a form (checked as the API checks it), one deleted after a
//! confirmation.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;

use super::page::{Chrome, ConfirmPage, Failure, Operator, correctable, render, segment, when};
use crate::http::providers as api;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/providers.html")]
struct ProvidersPage {
    chrome: Chrome,
    providers: Vec<Row>,
    error: Option<String>,
    created: Option<String>,
    typed: ProviderForm,
}

struct Row {
    name: String,
    kind: String,
    url: String,
    /// Direct when empty.
    agent: String,
    /// Header names: their values may read secrets.
    headers: String,
    created_at: String,
}

#[derive(Deserialize, Default)]
pub struct ProviderForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    agent: String,
    /// `Name: value`, one a line.
    #[serde(default)]
    headers: String,
}

impl ProviderForm {
    fn request(&self) -> Result<borealis_api::CreateMetricProvider, String> {
        let mut headers = Vec::new();
        for line in self.headers.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("header line {line:?}: expected Name: value"));
            };
            headers.push(borealis_api::HeaderPair { key: key.trim().to_owned(), value: value.trim().to_owned() });
        }
        Ok(borealis_api::CreateMetricProvider {
            name: self.name.trim().to_owned(),
            kind: "prometheus".into(),
            url: self.url.trim().to_owned(),
            agent: Some(self.agent.trim().to_owned()).filter(|a| !a.is_empty()),
            headers,
        })
    }
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, Failure> {
    Ok(render(&providers_page(&state, &operator, None, None, ProviderForm::default()).await?, StatusCode::OK))
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<ProviderForm>,
) -> Result<Response, Failure> {
    let refusal = match form.request() {
        Ok(request) => match correctable(api::create_provider(&state, &operator.team, request).await)? {
            Ok(created) => {
                let page = providers_page(&state, &operator, None, Some(created.name), ProviderForm::default()).await?;
                return Ok(render(&page, StatusCode::CREATED));
            }
            Err(problem) => (problem.detail, problem.status),
        },
        Err(detail) => (detail, StatusCode::BAD_REQUEST),
    };
    let (detail, status) = refusal;
    // What was typed comes back to be corrected, credentials in the URL masked.
    let form = ProviderForm { url: api::masked_url(&form.url), ..form };
    Ok(render(&providers_page(&state, &operator, Some(detail), None, form).await?, status))
}

pub async fn confirm_delete(Extension(operator): Extension<Operator>, Path(name): Path<String>) -> Response {
    let page = ConfirmPage {
        chrome: Chrome::new("providers", &operator),
        title: format!("Delete metric provider {name}"),
        question: format!("Delete metric provider {name}?"),
        consequence: "Analysis steps that name it fail, and deployments that name it are refused, until it is defined \
                      again."
            .into(),
        action: format!("/providers/{}/delete", segment(&name)),
        button: format!("Delete {name}"),
        cancel: "/providers".into(),
    };
    render(&page, StatusCode::OK)
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(name): Path<String>,
) -> Result<Redirect, Failure> {
    api::delete_provider(&state, &operator.team, &name).await?;
    Ok(Redirect::to("/providers"))
}

async fn providers_page(
    state: &AppState,
    operator: &Operator,
    error: Option<String>,
    created: Option<String>,
    typed: ProviderForm,
) -> Result<ProvidersPage, Failure> {
    let providers = api::list_providers(state, Some(&operator.team))
        .await?
        .into_iter()
        .map(|p| Row {
            headers: p.headers.iter().map(|h| h.key.as_str()).collect::<Vec<_>>().join(", "),
            created_at: when(&p.created_at),
            agent: p.agent.unwrap_or_default(),
            name: p.name,
            kind: p.kind,
            url: p.url,
        })
        .collect();
    Ok(ProvidersPage { chrome: Chrome::new("providers", operator), providers, error, created, typed })
}
