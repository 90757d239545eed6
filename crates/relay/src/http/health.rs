//! `/readyz` and `/metrics` (`/healthz` is a constant in the router).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;

pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.hub.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    if !state.replica.reachable() {
        return (StatusCode::SERVICE_UNAVAILABLE, "the database was unreachable at the last heartbeat\n")
            .into_response();
    }
    match state.store.ping().await {
        Ok(()) => "ready\n".into_response(),
        Err(err) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {err}\n")).into_response(),
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // A registered agent with no session here reads 0, not nothing.
    match state.store.active_credentials(borealis_store::CredentialKind::Agent, None).await {
        Ok(agents) => {
            for agent in agents {
                let labels = crate::metrics::AgentLabels { team: agent.team, agent: agent.subject };
                let _ = state.metrics.agent_sessions.get_or_create(&labels);
            }
        }
        Err(err) => tracing::debug!(error = err.to_string().as_str(), "could not list the agents for /metrics"),
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
