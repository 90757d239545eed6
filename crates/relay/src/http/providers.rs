//! `/api/v1/metric-providers`: what analysis steps query.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use borealis_core::template::{self, SecretUse};
use borealis_store::{CredentialKind, MetricProvider, StoreError};
use http::HeaderName;

use super::AppState;
use super::authorize::ActingTeam;
use super::extract::json_body;
use super::problem::{Problem, store_problem};
use borealis_engine::clock::rfc3339;

/// The provider types this version queries.
pub const SUPPORTED_TYPES: &[&str] = &["prometheus"];

/// `url` with any user name and password shown as `********`: a provider
/// stored before they were refused keeps working, and never shows them.
pub(crate) fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username(borealis_core::secret::MASK);
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Stored unparsed; show only up to the authority's end if it has `@`.
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("{}@{host}", borealis_core::secret::MASK),
            None => url.to_owned(),
        },
    }
}

fn describe(p: &MetricProvider) -> borealis_api::MetricProvider {
    borealis_api::MetricProvider {
        name: p.name.clone(),
        team: p.team.clone(),
        kind: p.kind.clone(),
        url: masked_url(&p.url),
        agent: p.agent.clone(),
        headers: p.headers.iter().map(|(k, v)| borealis_api::HeaderPair { key: k.clone(), value: v.clone() }).collect(),
        created_at: rfc3339(p.created_at),
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    body: axum::body::Bytes,
) -> Result<Response, Problem> {
    let request: borealis_api::CreateMetricProvider = json_body(&body)?;
    let created = create_provider(&state, &team, request).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Checks and stores `team`'s provider: for the API and the console alike.
pub(crate) async fn create_provider(
    state: &AppState,
    team: &str,
    request: borealis_api::CreateMetricProvider,
) -> Result<borealis_api::MetricProvider, Problem> {
    let bad = |detail: String| Problem::bad_request("invalid-metric-provider", detail);
    let name_ok = !request.name.is_empty()
        && request.name.len() <= 128
        && request.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(bad(format!("provider name {:?} must be 1 to 128 letters, digits, '-', '_' or '.'", request.name)));
    }
    if !SUPPORTED_TYPES.contains(&request.kind.as_str()) {
        return Err(bad(format!(
            "unsupported provider type {:?} (supported: {})",
            request.kind,
            SUPPORTED_TYPES.join(", ")
        )));
    }
    // The outbound path's own check (http(s), a host, no credentials); the
    // refusal says how providers carry credentials instead.
    if borealis_egress::client::parse_url(&request.url).is_err() {
        let credentials =
            url::Url::parse(&request.url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
        return Err(bad(if credentials {
            format!(
                "url {:?} holds credentials; they would be stored and shown in clear. Give the URL without them and \
                 send them in a header that reads a secret marked for providers, e.g. --header 'Authorization: Bearer \
                 {{{{secrets.NAME}}}}' after borealis secrets set NAME --use providers",
                masked_url(&request.url)
            )
        } else {
            format!("url {:?} is not an http(s) URL with a host", masked_url(&request.url))
        }));
    }
    // Each header may read only secrets marked for providers, never the
    // relay's own signing key; a secret not stored yet is found at query time.
    let secrets = state.vault.keyring(team).await.map_err(Problem::from)?;
    let signing_key = state.config.webhook_signing_secret.as_deref();
    let values = secrets.values(SecretUse::Providers, signing_key, BTreeMap::new(), BTreeMap::new());
    let mut headers = Vec::new();
    for h in request.headers {
        if HeaderName::from_bytes(h.key.as_bytes()).is_err() {
            return Err(bad(format!("{:?} is not a valid header name", h.key)));
        }
        template::check(&h.value)
            .and_then(|()| template::check_secret_uses(&h.value, &values))
            .map_err(|e| bad(format!("header {}: {e}", h.key)))?;
        headers.push((h.key, h.value));
    }
    let agent = request.agent.filter(|a| !a.is_empty());
    if let Some(agent) = &agent {
        // Only the team's own agents; another team's is not said to exist.
        let registered = state.store.active_credential(CredentialKind::Agent, team, agent).await?;
        if registered.is_none() {
            return Err(bad(format!(
                "agent {agent:?} is not registered in team {team:?} (borealis agents create {agent} --team {team})"
            )));
        }
    }
    let provider = MetricProvider {
        team: team.to_owned(),
        name: request.name,
        kind: request.kind,
        url: request.url,
        agent,
        headers,
        created_at: SystemTime::now(),
    };
    match state.store.insert_provider(&provider).await {
        Ok(()) => {}
        Err(StoreError::Conflict(conflict)) => {
            return Err(Problem::new(StatusCode::CONFLICT, "metric-provider-exists", conflict.to_string()));
        }
        Err(other) => return Err(store_problem(other)),
    }
    tracing::info!(provider = provider.name.as_str(), "metric provider created");
    Ok(describe(&provider))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
) -> Result<Response, Problem> {
    let providers = list_providers(&state, Some(&team)).await?;
    Ok(Json(borealis_api::MetricProviderList { providers }).into_response())
}

/// `team`'s providers (or every team's), their URLs' credentials masked.
pub(crate) async fn list_providers(
    state: &AppState,
    team: Option<&str>,
) -> Result<Vec<borealis_api::MetricProvider>, Problem> {
    let providers = state.store.providers(team).await.map_err(Problem::from)?;
    Ok(providers.iter().map(describe).collect())
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    Path(name): Path<String>,
) -> Result<Response, Problem> {
    delete_provider(&state, &team, &name).await?;
    Ok(Json(borealis_api::MetricProviderDeleted { name, deleted: true }).into_response())
}

pub(crate) async fn delete_provider(state: &AppState, team: &str, name: &str) -> Result<(), Problem> {
    if state.store.delete_provider(team, name).await.map_err(Problem::from)? {
        tracing::info!(provider = name, team, "metric provider deleted");
        Ok(())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-metric-provider",
            format!("no metric provider named {name:?} in team {team:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::masked_url;

    #[test]
    fn a_stored_urls_credentials_are_never_shown() {
        assert_eq!(masked_url("https://user:pass@prom.example:9090/x"), "https://********@prom.example:9090/x");
        assert_eq!(masked_url("http://token@prom/"), "http://********@prom/");
        assert_eq!(masked_url("http://:pass@prom/"), "http://********@prom/");
        assert_eq!(masked_url("http://prom:9090/"), "http://prom:9090/");
    }
}
