//! The agent's own `/healthz`, `/readyz` (ready only while it holds a
//! session) and `/metrics` on `--health-listen`.
//!
//! Whoever can reach the port can open connections to it, so they are
//! bounded as the relay's are ([`borealis_serve`]): at most
//! [`MAX_PER_PEER`] from one address and [`MAX_TOTAL`] in all (one prober or
//! scraper needs one or two; over a cap a connection is closed at once), a
//! request line and headers within [`HEADER_TIMEOUT`] of connecting, and no
//! more than [`IDLE_TIMEOUT`] between requests. A flood of idle or slow
//! connections therefore holds at most [`MAX_TOTAL`] of the agent's
//! descriptors, for seconds, and never the ones its forwarding needs.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use borealis_serve::{Acceptor, ConnectionLimits, Connections, TrackedBody};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::Agent;

/// Open health connections from one address.
pub const MAX_PER_PEER: usize = 16;
/// Open health connections in all.
pub const MAX_TOTAL: usize = 64;
/// How long a new connection may take to send its request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a connection may stay open with no request in flight.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

pub const LIMITS: ConnectionLimits = ConnectionLimits {
    max_total: MAX_TOTAL,
    max_per_peer: MAX_PER_PEER,
    // HTTP/1.1 only: one request per connection at a time.
    max_requests_per_peer: MAX_PER_PEER,
    header_timeout: HEADER_TIMEOUT,
    idle_timeout: IDLE_TIMEOUT,
};

pub async fn serve(listener: TcpListener, agent: Arc<Agent>, stop: CancellationToken) {
    let connections = Connections::new(LIMITS, agent.metrics.connections.clone());
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(agent);
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The watchdog closes (and counts) a connection that sent no complete
    // request head within HEADER_TIMEOUT; hyper's own bound, a little
    // later, covers the heads of the requests after the first.
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT + Duration::from_secs(1));
    let mut acceptor = Acceptor::new("health", listener, connections);
    while let Some((stream, connection)) = acceptor.accept(&stop).await {
        let activity = connection.activity();
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
            let in_flight = activity.begin(None);
            let call = router.clone().oneshot(request);
            async move { Ok::<_, std::convert::Infallible>(call.await?.map(|body| TrackedBody::new(body, in_flight))) }
        });
        let served = builder.serve_connection(TokioIo::new(stream), service);
        let stop = stop.clone();
        tokio::spawn(connection.run(async move {
            tokio::select! {
                result = served => result,
                () = stop.cancelled() => Ok(()),
            }
        }));
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
