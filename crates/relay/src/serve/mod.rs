//! The accept loop behind both listeners: connection caps, optional TLS,
//! then HTTP/1.1 or HTTP/2 (gRPC included) on the same port, until shutdown.
//!
//! Every connection is bounded in what an unauthenticated peer controls:
//! - it counts against a cap per client address and a cap for the whole
//!   relay (both listeners share them), so one client cannot use up the
//!   descriptors the API needs; over a cap it is closed at once. The client
//!   is the TCP peer, or behind a trusted balancer the address its PROXY
//!   header names ([`client`]);
//! - its requests in flight count against a cap per client address too,
//!   across its connections (HTTP/2 multiplexes thousands on one); over it
//!   a request is answered 503 at once;
//! - it must send a request within `header_timeout` of connecting (TLS
//!   handshake and PROXY header included), and is closed after
//!   `idle_timeout` with no request in flight. A gRPC stream (an agent's
//!   control stream) is a request in flight, so a live agent is never idle;
//! - a request's body must arrive within `body_timeout` ([`body`]), so a
//!   request in flight cannot hold a connection by never finishing;
//! - accept errors (out of descriptors) back off instead of spinning.
//!
//! The caps, the idle watchdog and the accept back-off are
//! [`borealis_serve`]'s, shared with the agent's health listener; what is
//! the relay's own is TLS, HTTP/2, the client behind a trusted balancer and
//! request bodies' deadlines.

mod body;
pub mod client;

pub use body::{stream_bodies, unbounded_bodies};
pub use client::TrustedProxies;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use borealis_serve::{Acceptor, Activity, ConnectionLimits, Connections, TrackedBody};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::Metrics;

/// The client of a request, put into its extensions: the TCP peer, or the
/// address a trusted proxy gave for it (port 0 when only a forwarding
/// header named it).
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// The connection a request came on, put into every request's extensions:
/// closing it ends every request on it (an agent session the relay gave up
/// on is cut at the TCP level, so the agent learns it at once).
#[derive(Clone)]
pub struct ConnectionHandle(Arc<Activity>);

impl ConnectionHandle {
    pub fn close(&self) {
        self.0.close();
    }
}

/// Bounds on connections and requests, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    pub connections: ConnectionLimits,
    /// How long a request's body may take ([`body`]).
    pub body_timeout: Duration,
}

/// Descriptors kept out of the connection cap: the store, outbound calls
/// (direct-mode webhooks and proxying), logs.
pub fn default_max_connections(descriptors: u64) -> usize {
    (descriptors / 2).clamp(64, 1 << 20) as usize
}

/// Raises the soft descriptor limit to the hard one (systemd gives services
/// 1 024 soft by default) and returns the soft limit in force.
pub fn raise_descriptor_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(error = %err, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map(|(soft, _)| soft).unwrap_or(1024)
        }
    }
}

/// What both listeners share: the caps on connections and requests by
/// client, whose word on clients is taken, and bodies' deadlines.
pub struct Edge {
    connections: Arc<Connections>,
    trusted: Arc<TrustedProxies>,
    body_timeout: Duration,
    body_timeouts: Counter,
}

impl Edge {
    pub fn new(limits: EdgeLimits, trusted: TrustedProxies, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            connections: Connections::new(limits.connections, metrics.connections.clone()),
            trusted: Arc::new(trusted),
            body_timeout: limits.body_timeout,
            body_timeouts: metrics.request_body_timeouts.clone(),
        })
    }
}

/// Serves `router` on `listener` until `stop` fires, then lets open
/// connections finish for up to `grace`.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    edge: Arc<Edge>,
    stop: CancellationToken,
    grace: Duration,
) {
    let limits = edge.connections.limits();
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .max_concurrent_streams(4096)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let builder = Arc::new(builder);
    // A trusted balancer's connection counts against the client its PROXY
    // header names; any other against its peer, at once.
    let trusted = edge.trusted.clone();
    let mut accepting = Acceptor::new(name, listener, edge.connections.clone())
        .deferring_peer_cap(Arc::new(move |ip| trusted.trusts(ip)));

    while let Some((stream, mut connection)) = accepting.accept(&stop).await {
        let edge = edge.clone();
        let router = router.clone();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let peer = connection.peer();
            let stream = if edge.trusted.trusts(peer.ip()) {
                match tokio::time::timeout(limits.header_timeout, client::read_preamble(stream)).await {
                    Ok(Ok((stream, named))) => {
                        // Without a PROXY header, forwarding headers name
                        // the clients; the connection counts on the total.
                        if let Some(named) = named
                            && connection.assign(named).is_err()
                        {
                            return;
                        }
                        stream
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(listener = name, %peer, error = %err, "no readable PROXY header");
                        return;
                    }
                    Err(_) => return connection.idled_out(),
                }
            } else {
                client::Prefixed::new(Vec::new(), stream)
            };
            let client = connection.peer();
            let activity = connection.activity();
            let service = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let client = match edge.trusted.client(client.ip(), req.headers()) {
                    ip if ip == client.ip() => client,
                    ip => SocketAddr::new(ip, 0),
                };
                let counted = edge.connections.begin_request(name, client.ip());
                let refused = counted.is_none();
                let in_flight = activity.begin(counted);
                // A stalled body closes an HTTP/1.1 connection; on HTTP/2 it
                // ends its stream only (a balancer may multiplex others').
                let close = (req.version() < http::Version::HTTP_2).then(|| activity.clone());
                let on_timeout = body::OnTimeout { close, counter: edge.body_timeouts.clone() };
                let (parts, incoming) = req.into_parts();
                let (timed, control) = body::TimedBody::new(incoming, edge.body_timeout, on_timeout);
                let mut req = http::Request::from_parts(parts, Body::new(timed));
                req.extensions_mut().insert(control);
                req.extensions_mut().insert(RemoteAddr(client));
                req.extensions_mut().insert(ConnectionHandle(activity.clone()));
                let call = (!refused).then(|| router.clone().oneshot(req));
                async move {
                    let response = match call {
                        Some(call) => call.await?,
                        None => too_many_requests(),
                    };
                    Ok::<_, std::convert::Infallible>(
                        response.map(|inner| Body::new(TrackedBody::new(inner, in_flight))),
                    )
                }
            });
            let service = hyper_util::service::TowerToHyperService::new(service);
            connection
                .run(async {
                    match acceptor {
                        None => {
                            watcher
                                .watch(
                                    builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned(),
                                )
                                .await
                        }
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(tls) => {
                                watcher
                                    .watch(
                                        builder.serve_connection_with_upgrades(TokioIo::new(tls), service).into_owned(),
                                    )
                                    .await
                            }
                            Err(err) => {
                                tracing::debug!(listener = name, %client, error = %err, "TLS handshake failed");
                                Ok(())
                            }
                        },
                    }
                })
                .await;
        });
    }
    drop(accepting);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(listener = name, "connections still open after the shutdown grace period; closing them");
    }
}

/// A request over its client's cap of requests in flight.
fn too_many_requests() -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (
        http::StatusCode::SERVICE_UNAVAILABLE,
        [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "too many requests in flight from this address\n",
    )
        .into_response();
    response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}
