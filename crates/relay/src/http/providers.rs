//! `/api/v1/metric-providers`: what analysis steps query.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use borealis_core::template;
use borealis_store::{MetricProvider, StoreError};
use http::HeaderName;

use super::AppState;
use super::extract::json_body;
use super::problem::{Problem, store_problem};
use crate::clock::rfc3339;

/// The provider types this version queries.
pub const SUPPORTED_TYPES: &[&str] = &["prometheus"];

fn describe(p: &MetricProvider) -> borealis_api::MetricProvider {
    borealis_api::MetricProvider {
        name: p.name.clone(),
        kind: p.kind.clone(),
        url: p.url.clone(),
        agent: p.agent.clone(),
        headers: p.headers.iter().map(|(k, v)| borealis_api::HeaderPair { key: k.clone(), value: v.clone() }).collect(),
        created_at: rfc3339(p.created_at),
    }
}

pub async fn create(State(state): State<Arc<AppState>>, body: axum::body::Bytes) -> Result<Response, Problem> {
    let request: borealis_api::CreateMetricProvider = json_body(&body)?;
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
    match url::Url::parse(&request.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        _ => return Err(bad(format!("url {:?} is not an http(s) URL", request.url))),
    }
    let mut headers = Vec::new();
    for h in request.headers {
        if HeaderName::from_bytes(h.key.as_bytes()).is_err() {
            return Err(bad(format!("{:?} is not a valid header name", h.key)));
        }
        template::check(&h.value).map_err(|e| bad(format!("header {}: {e}", h.key)))?;
        headers.push((h.key, h.value));
    }
    let provider = MetricProvider {
        name: request.name,
        kind: request.kind,
        url: request.url,
        agent: request.agent.filter(|a| !a.is_empty()),
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
    tracing::info!(provider = %provider.name, "metric provider created");
    Ok((StatusCode::CREATED, Json(describe(&provider))).into_response())
}

pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, Problem> {
    let providers = state.store.providers().await.map_err(Problem::internal)?;
    Ok(Json(borealis_api::MetricProviderList { providers: providers.iter().map(describe).collect() }).into_response())
}

pub async fn delete(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, Problem> {
    if state.store.delete_provider(&name).await.map_err(Problem::internal)? {
        Ok(Json(borealis_api::MetricProviderDeleted { name, deleted: true }).into_response())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-metric-provider",
            format!("no metric provider named {name:?}"),
        ))
    }
}
