//! The agent's own `/healthz`, `/readyz` (ready only while it holds a
//! session) and `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Agent;

pub async fn serve(listener: TcpListener, agent: Arc<Agent>, stop: CancellationToken) {
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(agent);
    if let Err(err) = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await {
        tracing::error!(error = %err, "health listener failed");
    }
}

async fn readyz(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    if agent.is_connected() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not connected to the relay\n")
    }
}

async fn metrics(State(agent): State<Arc<Agent>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], agent.metrics.encode())
}
