//! `ANY /api/v1/proxy?url=U[&agent=ID][&timeout=D]`: one request, sent
//! direct or through an agent by the [`Forwarder`], the reply streamed back.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use borealis_core::team::AgentRef;
use borealis_egress::headers::end_to_end;
use http_body_util::BodyExt;

use super::AppState;
use super::authorize::ActingTeam;
use super::problem::Problem;
use crate::forward::{self, Outbound};

#[derive(Debug, serde::Deserialize)]
pub struct ProxyQuery {
    pub url: String,
    pub agent: Option<String>,
    pub timeout: Option<String>,
}

pub async fn proxy(
    State(state): State<Arc<AppState>>,
    Extension(ActingTeam(team)): Extension<ActingTeam>,
    request: Request,
) -> Response {
    let query = match axum::extract::Query::<ProxyQuery>::try_from_uri(request.uri()) {
        Ok(query) => query.0,
        Err(err) => {
            return Problem::bad_request(
                "invalid-query",
                format!("{}; expected ?url=URL[&agent=ID][&timeout=30s]", err.body_text()),
            )
            .into_response();
        }
    };
    let started = Instant::now();
    let mode = if query.agent.is_some() { "agent" } else { "direct" };
    let result = send(&state, &team, query, request).await;
    let outcome = match &result {
        Ok(response) => crate::metrics::status_class(response.status().as_u16()).to_owned(),
        Err(problem) => problem.slug.to_owned(),
    };
    state.metrics.record(mode, outcome, started.elapsed().as_secs_f64());
    match result {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

/// Sends it direct, or through `team`'s agent the query names.
async fn send(state: &AppState, team: &str, query: ProxyQuery, request: Request) -> Result<Response, Problem> {
    let timeout = match &query.timeout {
        Some(text) => {
            borealis_core::duration::parse(text).map_err(|e| Problem::bad_request("invalid-timeout", e.to_string()))?
        }
        None => state.config.request_timeout,
    };
    let limit = state.config.max_body_bytes;
    let (parts, body) = request.into_parts();
    if let Some(length) =
        parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && length > limit
    {
        return Err(forward::too_large("request", limit).into());
    }
    let outbound = Outbound {
        method: parts.method,
        url: query.url,
        headers: end_to_end(&parts.headers),
        body: body.map_err(|e| -> forward::BoxError { Box::new(e) }).boxed_unsync(),
        timeout,
        limit,
    };
    let agent = query.agent.map(|name| AgentRef::new(team, name));
    let reply = state.forwarder.send(agent.as_ref(), outbound).await?;
    Ok(reply.map(Body::new))
}
