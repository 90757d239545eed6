//! The Secrets screen (names and uses only; set and delete) and the Callback
//! clients screen (create, its secret shown once; revoke).

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use axum::{Extension, Form};
use borealis_core::template::{SecretUse, Uses};
use borealis_store::CredentialKind;
use serde::Deserialize;

use super::page::{Chrome, ConfirmPage, Failure, Operator, correctable, render, segment, when};
use crate::http::problem::Problem;
use crate::http::{credentials, secrets as api};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "console/secrets.html")]
struct SecretsPage {
    chrome: Chrome,
    /// Name, when set, and uses.
    secrets: Vec<(String, String, String)>,
    error: Option<String>,
    stored: Option<String>,
    typed: String,
}

#[derive(Deserialize)]
pub struct SecretForm {
    name: String,
    value: String,
    /// A checkbox each: present when ticked.
    use_webhooks: Option<String>,
    use_signing: Option<String>,
    use_providers: Option<String>,
    /// Ticked: replacing a secret's value keeps its uses (so a new value
    /// for a signing key does not make it readable by webhooks).
    keep_uses: Option<String>,
}

impl SecretForm {
    fn uses(&self) -> Uses {
        [
            (&self.use_webhooks, SecretUse::Webhooks),
            (&self.use_signing, SecretUse::Signing),
            (&self.use_providers, SecretUse::Providers),
        ]
        .into_iter()
        .filter_map(|(ticked, use_)| ticked.is_some().then_some(use_))
        .collect()
    }
}

pub async fn secrets(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, Failure> {
    Ok(render(&secrets_page(&state, &operator, None, None, String::new()).await?, StatusCode::OK))
}

pub async fn set_secret(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<SecretForm>,
) -> Result<Response, Failure> {
    let name = form.name.trim().to_owned();
    let exists =
        || async { state.vault.names(&operator.team).await.map(|names| names.iter().any(|(n, _, _)| *n == name)) };
    let uses = match form.keep_uses.is_some() && exists().await.map_err(Problem::from)? {
        true => None,
        false => Some(form.uses()),
    };
    match correctable(api::store_secret(&state, &operator.team, &name, form.value, uses).await)? {
        Ok(()) => Ok(render(&secrets_page(&state, &operator, None, Some(name), String::new()).await?, StatusCode::OK)),
        Err(problem) => {
            Ok(render(&secrets_page(&state, &operator, Some(problem.detail), None, name).await?, problem.status))
        }
    }
}

pub async fn confirm_delete_secret(Extension(operator): Extension<Operator>, Path(name): Path<String>) -> Response {
    let page = ConfirmPage {
        chrome: Chrome::new("secrets", &operator),
        title: format!("Delete secret {name}"),
        question: format!("Delete secret {name}?"),
        consequence: "Webhooks and providers that name it fail until it is set again; its value cannot be recovered."
            .into(),
        action: format!("/secrets/{}/delete", segment(&name)),
        button: format!("Delete {name}"),
        cancel: "/secrets".into(),
    };
    render(&page, StatusCode::OK)
}

pub async fn delete_secret(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(name): Path<String>,
) -> Result<Redirect, Failure> {
    if !state.vault.delete(&operator.team, &name).await.map_err(Problem::from)? {
        return Err(Failure(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-secret",
            format!("no secret named {name:?}"),
        )));
    }
    tracing::info!(secret = %name, "secret deleted in the console");
    Ok(Redirect::to("/secrets"))
}

async fn secrets_page(
    state: &AppState,
    operator: &Operator,
    error: Option<String>,
    stored: Option<String>,
    typed: String,
) -> Result<SecretsPage, Failure> {
    let secrets = state.vault.names(&operator.team).await.map_err(Problem::from)?;
    let secrets = secrets
        .into_iter()
        .map(|(name, at, uses)| {
            (name, when(&borealis_engine::clock::rfc3339(at)), SecretUse::join(&uses).replace(',', ", "))
        })
        .collect();
    Ok(SecretsPage { chrome: Chrome::new("secrets", operator), secrets, error, stored, typed })
}

#[derive(Template)]
#[template(path = "console/clients.html")]
struct ClientsPage {
    chrome: Chrome,
    clients: Vec<(String, String, String)>,
    created: Option<(String, String, String)>,
    error: Option<String>,
    typed: String,
}

#[derive(Deserialize)]
pub struct ClientForm {
    name: String,
}

pub async fn clients(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
) -> Result<Response, Failure> {
    Ok(render(&clients_page(&state, &operator, None, None, String::new()).await?, StatusCode::OK))
}

pub async fn create_client(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Form(form): Form<ClientForm>,
) -> Result<Response, Failure> {
    let name = form.name.trim().to_owned();
    match correctable(credentials::create_credential(&state, CredentialKind::Callback, &operator.team, &name).await)? {
        Ok((client_id, secret)) => {
            let page = clients_page(&state, &operator, Some((name, client_id, secret)), None, String::new()).await?;
            Ok(render(&page, StatusCode::CREATED))
        }
        Err(problem) => {
            Ok(render(&clients_page(&state, &operator, None, Some(problem.detail), name).await?, problem.status))
        }
    }
}

pub async fn confirm_revoke_client(Extension(operator): Extension<Operator>, Path(name): Path<String>) -> Response {
    let page = ConfirmPage {
        chrome: Chrome::new("clients", &operator),
        title: format!("Revoke callback client {name}"),
        question: format!("Revoke callback client {name}?"),
        consequence: "Its tokens stop working at once: callbacks sent with them are refused.".into(),
        action: format!("/clients/{}/revoke", segment(&name)),
        button: format!("Revoke {name}"),
        cancel: "/clients".into(),
    };
    render(&page, StatusCode::OK)
}

pub async fn revoke_client(
    State(state): State<Arc<AppState>>,
    Extension(operator): Extension<Operator>,
    Path(name): Path<String>,
) -> Result<Redirect, Failure> {
    credentials::revoke_client_named(&state, &operator.team, &name).await?;
    Ok(Redirect::to("/clients"))
}

async fn clients_page(
    state: &AppState,
    operator: &Operator,
    created: Option<(String, String, String)>,
    error: Option<String>,
    typed: String,
) -> Result<ClientsPage, Failure> {
    let clients = state
        .store
        .active_credentials(CredentialKind::Callback, Some(&operator.team))
        .await
        .map_err(Problem::from)?
        .into_iter()
        .map(|c| (c.subject, c.client_id, when(&borealis_engine::clock::rfc3339(c.created_at))))
        .collect();
    Ok(ClientsPage { chrome: Chrome::new("clients", operator), clients, created, error, typed })
}
