//! Metric providers (`/api/v1/metric-providers`) and the one query an
//! analysis step makes of them: Prometheus' instant query,
//! `GET <url>/api/v1/query?query=...&time=...`.
//!
//! A provider with an agent is queried through that agent's tunnel, so the
//! agent's allow-list applies; without one, direct under the address guard.
//! Both go through [`crate::proxy::send`], like every other outgoing call.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use borealis_core::template::{self, Slot, Values};
use borealis_store::{MetricProvider, StoreError};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::api::{Problem, json_body, rfc3339};
use crate::proxy::{self, Outbound};
use crate::state::AppState;

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
        Err(StoreError::Conflict(message)) => {
            return Err(Problem::new(StatusCode::CONFLICT, "metric-provider-exists", message));
        }
        Err(other) => return Err(crate::api::store_problem(other)),
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

/// Asks `provider` for the value of `query` at `time`: one number, or why not.
pub async fn query(
    state: &Arc<AppState>,
    provider: &MetricProvider,
    query: &str,
    time: SystemTime,
) -> Result<f64, String> {
    let secrets = state.vault.all().await.map_err(|e| e.to_string())?;
    let values = Values { secrets, ..Values::default() };
    let mut headers = HeaderMap::new();
    for (key, value) in &provider.headers {
        let rendered = template::render(value, Slot::HeaderValue, &values, false)
            .map_err(|e| format!("provider {} header {key}: {e}", provider.name))?;
        let name = HeaderName::from_bytes(key.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(&rendered).map_err(|e| e.to_string())?;
        headers.insert(name, value);
    }
    let mut url = url::Url::parse(&provider.url).map_err(|e| format!("provider {} url: {e}", provider.name))?;
    {
        let path = format!("{}/api/v1/query", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    let seconds = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    url.query_pairs_mut().append_pair("query", query).append_pair("time", &format!("{seconds:.3}"));
    let timeout = Duration::from_secs(30);
    let outbound = Outbound {
        method: http::Method::GET,
        url: url.to_string(),
        headers,
        body: Body::empty(),
        timeout,
        limit: state.config.max_body_bytes,
    };
    let via = match &provider.agent {
        Some(agent) => format!("provider {} (through agent {agent})", provider.name),
        None => format!("provider {}", provider.name),
    };
    let call = async {
        let response = proxy::send(state, provider.agent.as_deref(), outbound)
            .await
            .map_err(|e| format!("{via} could not be queried: {}", e.problem.detail))?;
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1024 * 1024)
            .await
            .map_err(|e| format!("{via}: the reply could not be read: {e}"))?;
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| Err(format!("{via} did not answer within {}", humantime::format_duration(timeout))))?;
    interpret(&via, status.as_u16(), &body)
}

/// Prometheus' answer, as one number or a reason it is not one.
fn interpret(via: &str, status: u16, body: &[u8]) -> Result<f64, String> {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let prom_error = parsed.as_ref().filter(|v| v["status"] == "error").map(|v| {
        format!("{}: {}", v["errorType"].as_str().unwrap_or("error"), v["error"].as_str().unwrap_or("no detail"))
    });
    if !(200..300).contains(&status) {
        let detail = prom_error.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
        return Err(format!("{via} answered HTTP {status}: {detail}"));
    }
    if let Some(detail) = prom_error {
        return Err(format!("{via} answered status error: {detail}"));
    }
    let Some(v) = parsed else { return Err(format!("{via} answered something that is not Prometheus JSON")) };
    let data = &v["data"];
    let value = match data["resultType"].as_str() {
        Some("scalar") => data["result"][1].as_str().map(str::to_owned),
        Some("vector") => {
            let result = data["result"].as_array().cloned().unwrap_or_default();
            match result.len() {
                0 => return Err(format!("{via}: the query returned an empty result")),
                1 => result[0]["value"][1].as_str().map(str::to_owned),
                n => return Err(format!("{via}: the query returned {n} series, not a single number")),
            }
        }
        Some(other) => return Err(format!("{via}: the query returned a {other}, not a single number")),
        None => return Err(format!("{via} answered without a resultType")),
    };
    let Some(text) = value else { return Err(format!("{via}: the result holds no value")) };
    match text.parse::<f64>() {
        Ok(n) if n.is_nan() => Err(format!("{via}: the query returned NaN")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{via}: the query returned {text:?}, not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::interpret;

    #[test]
    fn only_a_single_number_passes() {
        let ok = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"4.5"]}]}}"#;
        assert_eq!(interpret("p", 200, ok), Ok(4.5));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#;
        assert_eq!(interpret("p", 200, scalar), Ok(2.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(interpret("p", 200, empty).unwrap_err().contains("empty result"));
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(interpret("p", 200, nan).unwrap_err().contains("NaN"));
        let text = br#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert!(interpret("p", 200, text).unwrap_err().contains("a string, not a single number"));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(interpret("p", 400, bad).unwrap_err(), "p answered HTTP 400: bad_data: parse error");
        assert!(interpret("p", 500, b"boom").unwrap_err().contains("HTTP 500: boom"));
    }
}
