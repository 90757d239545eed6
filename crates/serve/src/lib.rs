//! What every Borealis listener does between `accept` and HTTP, so that an
//! unauthenticated peer bounds only its own connections: the relay's API and
//! agent listeners, and the agent's health listener, share it.
//!
//! - [`Connections`]: a cap per client address and a cap in total (a
//!   listener or several share one); a connection over a cap is closed at
//!   once and counted. Requests in flight are capped per client address too,
//!   across its connections ([`Connections::begin_request`]): HTTP/2 carries
//!   thousands on one. The client is the peer, unless the caller learns it
//!   later (a balancer's PROXY header): then the connection counts on the
//!   total until [`Connection::assign`];
//! - [`Activity`]: a connection must send a request within the header
//!   timeout of connecting, and is closed after the idle timeout with no
//!   request in flight ([`Connection::run`] is its watchdog; a request is in
//!   flight until its response body is done, see [`TrackedBody`]);
//! - [`Acceptor`]: accept errors (out of descriptors) back off instead of
//!   spinning, and refusals are logged at most once per 10 s.
//!
//! No HTTP server, router or TLS here: the caller serves each admitted
//! stream as it likes and hands the future to [`Connection::run`].

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The address a client is counted under: an IPv4 address as it is, an
/// IPv6 address by its /64 (one host is given a whole /64, so counting
/// single IPv6 addresses would give it 2^64 allowances), an IPv4-mapped
/// IPv6 address as its IPv4 address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        v4 => v4,
    }
}

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections on the listeners sharing one [`Connections`].
    pub max_total: usize,
    /// Open connections from one client address.
    pub max_per_peer: usize,
    /// Requests in flight from one client address, on all its connections.
    pub max_requests_per_peer: usize,
    /// How long a new connection may take to send its first request.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// The listener's name ("http", "agents", "health").
    pub listener: &'static str,
    /// Which cap refused it: "peer" or "total".
    pub cap: &'static str,
}

/// The series [`Connections`] keeps up to date.
#[derive(Clone, Default)]
pub struct ConnectionMetrics {
    pub open: Gauge,
    pub refused: Family<ConnectionLabels, Counter>,
    pub idle_closed: Counter,
    /// Requests refused because their client had too many in flight.
    pub requests_refused: Family<ConnectionLabels, Counter>,
}

impl ConnectionMetrics {
    /// Registers `connections_open`, `connections_refused` and
    /// `connections_idle_closed` in `registry` (under its prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("connections_open", "Open connections on the listeners", metrics.open.clone());
        registry.register(
            "connections_refused",
            "Connections closed at accept because a connection cap was reached",
            metrics.refused.clone(),
        );
        registry.register(
            "connections_idle_closed",
            "Connections closed for sending no request within the header timeout, or idling past the idle timeout",
            metrics.idle_closed.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests answered at once with 503 because their client address had too many in flight",
            metrics.requests_refused.clone(),
        );
        metrics
    }
}

/// The connections open on the listeners that share this, by client.
pub struct Connections {
    limits: ConnectionLimits,
    total: AtomicUsize,
    per_peer: Mutex<HashMap<IpAddr, PeerLoad>>,
    metrics: ConnectionMetrics,
}

/// What one client address holds.
#[derive(Default)]
struct PeerLoad {
    connections: usize,
    requests: usize,
}

impl Connections {
    pub fn new(limits: ConnectionLimits, metrics: ConnectionMetrics) -> Arc<Self> {
        Arc::new(Self { limits, total: AtomicUsize::new(0), per_peer: Mutex::default(), metrics })
    }

    pub fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// A slot for a new connection from `peer`, or which cap ("peer",
    /// "total") leaves none.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, &'static str> {
        let mut slot = self.admit_unassigned()?;
        slot.assign(peer)?;
        Ok(slot)
    }

    /// A slot counted on the total only, until [`Slot::assign`].
    pub fn admit_unassigned(self: &Arc<Self>) -> Result<Slot, &'static str> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.limits.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err("total");
        }
        self.metrics.open.inc();
        Ok(Slot { connections: self.clone(), peer: None })
    }

    /// Counts a request in flight from `client`; `None` when it already has
    /// [`ConnectionLimits::max_requests_per_peer`] (the refusal is counted
    /// for `listener`).
    pub fn begin_request(self: &Arc<Self>, listener: &'static str, client: IpAddr) -> Option<PeerRequest> {
        let client = client_key(client);
        let mut per_peer = self.per_peer.lock().expect("connections lock");
        let load = per_peer.entry(client).or_default();
        if load.requests >= self.limits.max_requests_per_peer {
            if load.connections == 0 && load.requests == 0 {
                per_peer.remove(&client);
            }
            self.metrics.requests_refused.get_or_create(&ConnectionLabels { listener, cap: "peer" }).inc();
            return None;
        }
        load.requests += 1;
        Some(PeerRequest { connections: self.clone(), client })
    }

    fn release(&self, client: IpAddr, connection: bool) {
        let mut per_peer = self.per_peer.lock().expect("connections lock");
        if let Some(load) = per_peer.get_mut(&client) {
            if connection {
                load.connections -= 1;
            } else {
                load.requests -= 1;
            }
            if load.connections == 0 && load.requests == 0 {
                per_peer.remove(&client);
            }
        }
    }
}

/// One admitted connection; gives its place back when dropped.
pub struct Slot {
    connections: Arc<Connections>,
    /// The client it counts against, once known.
    peer: Option<IpAddr>,
}

impl Slot {
    /// Counts this connection against `client`'s cap, or says it is full.
    pub fn assign(&mut self, client: IpAddr) -> Result<(), &'static str> {
        let client = client_key(client);
        let mut per_peer = self.connections.per_peer.lock().expect("connections lock");
        let load = per_peer.entry(client).or_default();
        if load.connections >= self.connections.limits.max_per_peer {
            if load.connections == 0 && load.requests == 0 {
                per_peer.remove(&client);
            }
            return Err("peer");
        }
        load.connections += 1;
        if let Some(previous) = self.peer.replace(client) {
            drop(per_peer);
            self.connections.release(previous, true);
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(peer) = self.peer {
            self.connections.release(peer, true);
        }
        self.connections.total.fetch_sub(1, Ordering::AcqRel);
        self.connections.metrics.open.dec();
    }
}

/// A request in flight counted against its client; released when dropped.
pub struct PeerRequest {
    connections: Arc<Connections>,
    client: IpAddr,
}

impl Drop for PeerRequest {
    fn drop(&mut self) {
        self.connections.release(self.client, false);
    }
}

/// What a connection is doing, for its idle watchdog.
pub struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    requests: AtomicU64,
    /// Milliseconds after `born` when the last request finished.
    idle_since_ms: AtomicU64,
    close: CancellationToken,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            close: CancellationToken::new(),
        })
    }

    /// A request starts; it is in flight until the guard is dropped (keep
    /// it in the response body with [`TrackedBody`]), and so is its count
    /// against its client, if it has one.
    pub fn begin(self: &Arc<Self>, counted: Option<PeerRequest>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight { activity: self.clone(), _counted: counted }
    }

    /// Closes the connection, whatever is in flight on it.
    pub fn close(&self) {
        self.close.cancel();
    }

    /// Resolves true when the connection has been idle too long, false when
    /// it was closed by [`Activity::close`].
    pub async fn expired(&self, limits: ConnectionLimits) -> bool {
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

/// A request in flight on a connection.
pub struct InFlight {
    activity: Arc<Activity>,
    _counted: Option<PeerRequest>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.idle_since_ms.store(activity.born.elapsed().as_millis() as u64, Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`InFlight`] until it is done.
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Self { inner, _in_flight: in_flight }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

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
pub struct AcceptBackoff {
    delay: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        Self { delay: Self::FIRST, failures: 0, last_log: None }
    }
}

impl AcceptBackoff {
    pub const FIRST: Duration = Duration::from_millis(5);
    pub const MAX: Duration = Duration::from_secs(1);

    pub async fn failed(&mut self, listener: &str, err: &std::io::Error) {
        self.failures += 1;
        if self.last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(listener, error = %err, failures = self.failures, "accept failed; backing off");
            self.last_log = Some(Instant::now());
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Self::MAX);
    }

    pub fn succeeded(&mut self) {
        self.delay = Self::FIRST;
        self.failures = 0;
    }
}

/// Peers whose connections name their client later (a balancer's PROXY
/// header): admitted on the total cap only, until [`Connection::assign`].
pub type DeferPeerCap = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// A listener whose connections are admitted under [`Connections`]' caps.
pub struct Acceptor {
    name: &'static str,
    listener: TcpListener,
    connections: Arc<Connections>,
    backoff: AcceptBackoff,
    refusals_logged: Option<Instant>,
    defer: Option<DeferPeerCap>,
}

impl Acceptor {
    pub fn new(name: &'static str, listener: TcpListener, connections: Arc<Connections>) -> Self {
        Self { name, listener, connections, backoff: AcceptBackoff::default(), refusals_logged: None, defer: None }
    }

    /// Connections from peers `defer` picks count on the total only until
    /// the caller [`Connection::assign`]s their client.
    pub fn deferring_peer_cap(mut self, defer: DeferPeerCap) -> Self {
        self.defer = Some(defer);
        self
    }

    /// The next connection admitted under the caps (those over a cap are
    /// closed and counted meanwhile), or `None` once `stop` fires.
    pub async fn accept(&mut self, stop: &CancellationToken) -> Option<(TcpStream, Connection)> {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => { self.backoff.succeeded(); pair }
                    Err(err) => { self.backoff.failed(self.name, &err).await; continue; }
                },
                () = stop.cancelled() => return None,
            };
            let deferred = self.defer.as_ref().is_some_and(|defer| defer(peer.ip()));
            let admitted =
                if deferred { self.connections.admit_unassigned() } else { self.connections.admit(peer.ip()) };
            match admitted {
                Ok(slot) => {
                    let _ = stream.set_nodelay(true);
                    let connection = Connection {
                        name: self.name,
                        peer,
                        activity: Activity::new(),
                        limits: self.connections.limits,
                        metrics: self.connections.metrics.clone(),
                        slot,
                    };
                    return Some((stream, connection));
                }
                Err(cap) => {
                    let labels = ConnectionLabels { listener: self.name, cap };
                    self.connections.metrics.refused.get_or_create(&labels).inc();
                    if self.refusals_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                        tracing::warn!(listener = self.name, %peer, cap, "connection refused: over the connection cap (logged once per 10 s)");
                        self.refusals_logged = Some(Instant::now());
                    }
                }
            }
        }
    }
}

/// An admitted connection: its peer, its [`Activity`] and its place under
/// the caps, held until [`Connection::run`] ends.
pub struct Connection {
    name: &'static str,
    peer: SocketAddr,
    activity: Arc<Activity>,
    limits: ConnectionLimits,
    metrics: ConnectionMetrics,
    slot: Slot,
}

impl Connection {
    /// The client: the TCP peer, or the one [`Connection::assign`] named.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Names the connection's client (from a trusted balancer's PROXY
    /// header) and counts it against that client's cap; `Err` (counted)
    /// when the client has no room left: drop the connection.
    pub fn assign(&mut self, client: SocketAddr) -> Result<(), &'static str> {
        if let Err(cap) = self.slot.assign(client.ip()) {
            self.metrics.refused.get_or_create(&ConnectionLabels { listener: self.name, cap }).inc();
            tracing::debug!(listener = self.name, %client, cap, "connection refused: over the connection cap");
            return Err(cap);
        }
        self.peer = client;
        Ok(())
    }

    /// Counts the connection as closed for idling, without a watchdog
    /// (the caller timed out something before its requests began).
    pub fn idled_out(self) {
        self.metrics.idle_closed.inc();
    }

    /// What the connection's requests report to (see [`Activity::begin`]).
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Drives `served` (the connection's HTTP) until it ends, the connection
    /// idles past its timeouts (closed and counted), or it is closed by
    /// [`Activity::close`]; dropping `served` closes the socket.
    pub async fn run<E: Display>(self, served: impl Future<Output = Result<(), E>>) {
        let (name, peer) = (self.name, self.peer);
        tokio::select! {
            result = served => if let Err(err) = result {
                // Garbage, a reset, a client that went away: that connection only.
                tracing::debug!(listener = name, %peer, error = %err, "connection ended with an error");
            },
            idle = self.activity.expired(self.limits) => if idle {
                self.metrics.idle_closed.inc();
                tracing::debug!(listener = name, %peer, "closed an idle connection");
            } else {
                tracing::debug!(listener = name, %peer, "connection closed by the server");
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_total: 3,
            max_per_peer: 2,
            max_requests_per_peer: 2,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn caps_per_peer_and_in_total_and_slots_are_given_back() {
        let metrics = ConnectionMetrics::default();
        let connections = Connections::new(limits(), metrics.clone());
        let (a, b, c) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), [10, 0, 0, 3].into());
        let first = connections.admit(a).unwrap();
        let _second = connections.admit(a).unwrap();
        assert_eq!(connections.admit(a).err(), Some("peer"));
        let _third = connections.admit(b).unwrap();
        assert_eq!(connections.admit(c).err(), Some("total"));
        assert_eq!(metrics.open.get(), 3);
        drop(first);
        assert_eq!(metrics.open.get(), 2);
        assert!(connections.admit(c).is_ok(), "a slot given back is free again");
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let metrics = ConnectionMetrics::default();
        let connections = Connections::new(limits(), metrics);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = connections.admit(one).unwrap();
        let _b = connections.admit(same_64).unwrap();
        assert_eq!(connections.admit(same_64).err(), Some("peer"), "one /64 is one client");
        assert!(connections.admit(other_64).is_ok());
        assert_eq!(client_key("::ffff:192.0.2.1".parse().unwrap()), "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_client_named_later_and_requests_per_client() {
        let metrics = ConnectionMetrics::default();
        let connections = Connections::new(limits(), metrics.clone());
        let (proxy, client) = ([10, 0, 0, 9].into(), [192, 0, 2, 1].into());
        let mut first = connections.admit_unassigned().unwrap();
        first.assign(client).unwrap();
        let mut second = connections.admit_unassigned().unwrap();
        second.assign(client).unwrap();
        let mut third = connections.admit_unassigned().unwrap();
        assert_eq!(third.assign(client), Err("peer"), "the client's cap, not the proxy's");
        third.assign(proxy).unwrap();
        let one = connections.begin_request("http", client).unwrap();
        let _two = connections.begin_request("http", client).unwrap();
        assert!(connections.begin_request("http", client).is_none());
        assert_eq!(
            metrics.requests_refused.get_or_create(&ConnectionLabels { listener: "http", cap: "peer" }).get(),
            1
        );
        assert!(connections.begin_request("http", proxy).is_some(), "another client is not affected");
        drop(one);
        assert!(connections.begin_request("http", client).is_some(), "a request done frees its place");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_expires_on_the_header_timeout_then_on_the_idle_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        assert!(activity.expired(limits()).await);
        assert_eq!(started.elapsed(), Duration::from_secs(5), "no request: the header timeout");

        let activity = Activity::new();
        let request = activity.begin(None);
        let watchdog = tokio::spawn({
            let activity = activity.clone();
            async move { activity.expired(limits()).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!watchdog.is_finished(), "a request in flight is never idle");
        drop(request);
        let finished = Instant::now();
        assert!(watchdog.await.unwrap());
        assert!(finished.elapsed() >= Duration::from_secs(30), "idle for the idle timeout after the request");

        let activity = Activity::new();
        activity.close();
        assert!(!activity.expired(limits()).await, "closed, not idle");
    }

    #[tokio::test]
    async fn a_tracked_body_holds_its_request_in_flight_until_dropped() {
        use http_body_util::BodyExt;
        let activity = Activity::new();
        let body = TrackedBody::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")), activity.begin(None));
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 1);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(activity.in_flight.load(Ordering::Acquire), 0);
    }
}
