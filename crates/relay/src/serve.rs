//! The accept loop behind both listeners: connection caps, optional TLS,
//! then HTTP/1.1 or HTTP/2 (gRPC included) on the same port, until shutdown.
//!
//! Every connection is bounded in what an unauthenticated peer controls:
//! - it counts against a cap per peer address and a cap for the whole relay
//!   (both listeners share them), so one peer cannot use up the descriptors
//!   the API needs; over a cap it is closed at once;
//! - it must send a request within `header_timeout` of connecting (TLS
//!   handshake included), and is closed after `idle_timeout` with no request
//!   in flight. A gRPC stream (an agent's control stream) is a request in
//!   flight, so a live agent is never idle;
//! - accept errors (out of descriptors) back off instead of spinning.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::metrics::{ConnectionLabels, Metrics};

/// The peer of a connection, put into every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// The connection a request came on, put into every request's extensions:
/// closing it ends every request on it (an agent session the relay gave up
/// on is cut at the TCP level, so the agent learns it at once).
#[derive(Clone)]
pub struct ConnectionHandle(Arc<Activity>);

impl ConnectionHandle {
    pub fn close(&self) {
        self.0.close.cancel();
    }
}

/// Bounds on connections, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections on both listeners together.
    pub max_total: usize,
    /// Open connections from one peer address.
    pub max_per_peer: usize,
    /// How long a new connection may take to send its first request.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
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

/// The connections open on both listeners, by peer.
pub struct Connections {
    limits: ConnectionLimits,
    total: AtomicUsize,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    open: Gauge,
    refused: Family<ConnectionLabels, Counter>,
    idle_closed: Counter,
}

impl Connections {
    pub fn new(limits: ConnectionLimits, metrics: &Metrics) -> Arc<Self> {
        Arc::new(Self {
            limits,
            total: AtomicUsize::new(0),
            per_peer: Mutex::default(),
            open: metrics.connections_open.clone(),
            refused: metrics.connections_refused.clone(),
            idle_closed: metrics.connections_idle_closed.clone(),
        })
    }

    /// A slot for a new connection from `peer`, or why there is none.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, &'static str> {
        let mut per_peer = self.per_peer.lock().expect("connections lock");
        let from_peer = per_peer.get(&peer).copied().unwrap_or(0);
        if from_peer >= self.limits.max_per_peer {
            return Err("peer");
        }
        if self.total.load(Ordering::Relaxed) >= self.limits.max_total {
            return Err("total");
        }
        per_peer.insert(peer, from_peer + 1);
        self.total.fetch_add(1, Ordering::Relaxed);
        self.open.inc();
        Ok(Slot { connections: self.clone(), peer })
    }
}

/// One admitted connection; gives its place back when dropped.
struct Slot {
    connections: Arc<Connections>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_peer = self.connections.per_peer.lock().expect("connections lock");
        if let Some(count) = per_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                per_peer.remove(&self.peer);
            }
        }
        self.connections.total.fetch_sub(1, Ordering::Relaxed);
        self.connections.open.dec();
    }
}

/// What a connection is doing, for its idle watchdog.
struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `born` when the last request finished.
    idle_since_ms: AtomicU64,
    close: CancellationToken,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            close: CancellationToken::new(),
        })
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves when the connection has been idle too long, or was closed.
    async fn expired(&self, limits: ConnectionLimits) -> bool {
        loop {
            let limit =
                if self.requests.load(Ordering::Relaxed) == 0 { limits.header_timeout } else { limits.idle_timeout };
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                limit
            } else {
                let idle_since = self.born + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
                let idle_for = idle_since.elapsed();
                if idle_for >= limit {
                    return true;
                }
                limit - idle_for
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.close.cancelled() => return false,
            }
        }
    }
}

/// A request in flight on a connection, until its response body is done.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since_ms.store(activity.born.elapsed().as_millis() as u64, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Accept errors come in bursts (out of descriptors); each one waits longer,
/// up to a second, and is logged at most once per burst second.
struct AcceptBackoff {
    delay: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    async fn failed(&mut self, listener: &str, err: &std::io::Error) {
        self.failures += 1;
        if self.last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(listener, error = %err, failures = self.failures, "accept failed; backing off");
            self.last_log = Some(Instant::now());
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    fn succeeded(&mut self) {
        self.delay = Self::FIRST;
        self.failures = 0;
    }
}

/// Serves `router` on `listener` until `stop` fires, then lets open
/// connections finish for up to `grace`.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    connections: Arc<Connections>,
    stop: CancellationToken,
    grace: Duration,
) {
    let limits = connections.limits;
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
    let mut backoff = AcceptBackoff { delay: AcceptBackoff::FIRST, failures: 0, last_log: None };
    let mut refusals_logged: Option<Instant> = None;

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => { backoff.succeeded(); pair }
                Err(err) => { backoff.failed(name, &err).await; continue; }
            },
            () = stop.cancelled() => break,
        };
        let slot = match connections.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(cap) => {
                connections.refused.get_or_create(&ConnectionLabels { listener: name, cap }).inc();
                if refusals_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(listener = name, %peer, cap, "connection refused: over the connection cap (logged once per 10 s)");
                    refusals_logged = Some(Instant::now());
                }
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let tracked = activity.clone();
        let router = router.clone();
        let service = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let in_flight = tracked.begin();
            req.extensions_mut().insert(RemoteAddr(peer));
            req.extensions_mut().insert(ConnectionHandle(tracked.clone()));
            let call = router.clone().oneshot(req);
            async move {
                let response = call.await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|inner| Body::new(TrackedBody { inner, _in_flight: in_flight })),
                )
            }
        });
        let service = hyper_util::service::TowerToHyperService::new(service);
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let watcher = graceful.watcher();
        let idle_closed = connections.idle_closed.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let expired = activity.expired(limits);
            let served = async {
                match acceptor {
                    None => {
                        watcher
                            .watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned())
                            .await
                    }
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => {
                            watcher
                                .watch(builder.serve_connection_with_upgrades(TokioIo::new(tls), service).into_owned())
                                .await
                        }
                        Err(err) => {
                            tracing::debug!(listener = name, %peer, error = %err, "TLS handshake failed");
                            Ok(())
                        }
                    },
                }
            };
            tokio::select! {
                result = served => if let Err(err) = result {
                    // Garbage, a reset, a client that went away: that connection only.
                    tracing::debug!(listener = name, %peer, error = %err, "connection ended with an error");
                },
                idle = expired => if idle {
                    idle_closed.inc();
                    tracing::debug!(listener = name, %peer, "closed an idle connection");
                } else {
                    tracing::debug!(listener = name, %peer, "connection closed by the relay");
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(listener = name, "connections still open after the shutdown grace period; closing them");
    }
}
