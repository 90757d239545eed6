//! `/api/v1/secrets`: names and uses only; values go in and never come out.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use borealis_core::Secret;
use borealis_core::template::{SecretUse, Uses};

use super::AppState;
use super::authorize::ActingTeam;
use super::extract::json_body;
use super::problem::Problem;
use borealis_engine::clock::rfc3339;
use borealis_engine::vault;

/// The body is the value; with `Content-Type: application/json` it is a
/// [`borealis_api::PutSecret`], the value with its uses.
pub async fn put_secret(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    Path(name): Path<String>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")));
    let (value, uses) = if json {
        let request: borealis_api::PutSecret = json_body(&body)?;
        (request.value, request.uses)
    } else {
        let value = String::from_utf8(body.to_vec())
            .map_err(|_| Problem::bad_request("invalid-secret", "the secret value must be UTF-8 text"))?;
        (value, None)
    };
    store_secret(&state, &team, &name, value, uses.as_deref().map(uses_from_api)).await?;
    Ok(Json(borealis_api::SecretStored { name, stored: true }).into_response())
}

/// Validates and stores (encrypted) `team`'s secret `name`, marked for `uses`
/// (an empty set is refused); without, as [`borealis_engine::vault::Vault::set`] says.
pub(crate) async fn store_secret(
    state: &AppState,
    team: &str,
    name: &str,
    value: String,
    uses: Option<Uses>,
) -> Result<(), Problem> {
    vault::validate_name(name).map_err(|e| Problem::bad_request("invalid-secret-name", e))?;
    if value.is_empty() {
        return Err(Problem::bad_request("invalid-secret", "the secret value is empty"));
    }
    if value.len() > vault::MAX_SECRET_BYTES {
        return Err(Problem::bad_request(
            "invalid-secret",
            format!("the secret value is {} bytes; at most {} are taken", value.len(), vault::MAX_SECRET_BYTES),
        ));
    }
    if uses.as_ref().is_some_and(Uses::is_empty) {
        return Err(Problem::bad_request(
            "invalid-secret",
            "a secret needs at least one use: webhooks, signing or providers",
        ));
    }
    state.vault.set(team, name, &Secret::new(value), uses.as_ref()).await.map_err(Problem::from)?;
    match &uses {
        Some(uses) => tracing::info!(secret = %name, team, uses = %SecretUse::join(uses), "secret stored"),
        None => tracing::info!(secret = %name, team, "secret stored"),
    }
    Ok(())
}

pub(crate) fn uses_from_api(uses: &[borealis_api::SecretUse]) -> Uses {
    uses.iter()
        .map(|u| match u {
            borealis_api::SecretUse::Webhooks => SecretUse::Webhooks,
            borealis_api::SecretUse::Signing => SecretUse::Signing,
            borealis_api::SecretUse::Providers => SecretUse::Providers,
        })
        .collect()
}

fn uses_to_api(uses: &Uses) -> Vec<borealis_api::SecretUse> {
    uses.iter()
        .map(|u| match u {
            SecretUse::Webhooks => borealis_api::SecretUse::Webhooks,
            SecretUse::Signing => borealis_api::SecretUse::Signing,
            SecretUse::Providers => borealis_api::SecretUse::Providers,
        })
        .collect()
}

pub async fn list_secrets(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
) -> Result<Response, Problem> {
    let names = state.vault.names(&team).await.map_err(Problem::from)?;
    let secrets = names
        .into_iter()
        .map(|(name, at, uses)| borealis_api::SecretSummary { name, updated_at: rfc3339(at), uses: uses_to_api(&uses) })
        .collect();
    Ok(Json(borealis_api::SecretList { secrets }).into_response())
}

pub async fn delete_secret(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    if state.vault.delete(&team, &name).await.map_err(Problem::from)? {
        Ok(Json(borealis_api::SecretDeleted { name, deleted: true }).into_response())
    } else {
        let detail = format!("no secret named {name:?} in team {team:?}");
        Err(Problem::new(StatusCode::NOT_FOUND, "unknown-secret", detail))
    }
}
