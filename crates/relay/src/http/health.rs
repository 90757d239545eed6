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
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.encode())
        .into_response()
}
