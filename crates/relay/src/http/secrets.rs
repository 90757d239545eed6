//! `/api/v1/secrets`: names only; values go in and never come out.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use borealis_core::Secret;

use super::AppState;
use super::problem::Problem;
use crate::clock::rfc3339;
use crate::vault;

pub async fn put_secret(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let value = String::from_utf8(body.to_vec())
        .map_err(|_| Problem::bad_request("invalid-secret", "the secret value must be UTF-8 text"))?;
    store_secret(&state, &name, value).await?;
    Ok(Json(borealis_api::SecretStored { name, stored: true }).into_response())
}

/// Validates and stores (encrypted) secret `name`.
pub(crate) async fn store_secret(state: &AppState, name: &str, value: String) -> Result<(), Problem> {
    vault::validate_name(name).map_err(|e| Problem::bad_request("invalid-secret-name", e))?;
    if value.is_empty() {
        return Err(Problem::bad_request("invalid-secret", "the secret value is empty"));
    }
    state.vault.set(name, &Secret::new(value)).await.map_err(Problem::internal)?;
    tracing::info!(secret = %name, "secret stored");
    Ok(())
}

pub async fn list_secrets(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let names = state.vault.names().await.map_err(Problem::internal)?;
    let secrets =
        names.into_iter().map(|(name, at)| borealis_api::SecretSummary { name, updated_at: rfc3339(at) }).collect();
    Ok(Json(borealis_api::SecretList { secrets }).into_response())
}

pub async fn delete_secret(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, Problem> {
    if state.vault.delete(&name).await.map_err(Problem::internal)? {
        Ok(Json(borealis_api::SecretDeleted { name, deleted: true }).into_response())
    } else {
        Err(Problem::new(StatusCode::NOT_FOUND, "unknown-secret", format!("no secret named {name:?}")))
    }
}
