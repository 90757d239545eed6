//! The relay's Prometheus metrics, served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use borealis_engine::metrics::EngineMetrics;
use borealis_serve::ConnectionMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub team: String,
    pub agent: String,
}

impl AgentLabels {
    pub fn of(agent: &borealis_core::team::AgentRef) -> Self {
        Self { team: agent.team.clone(), agent: agent.name.clone() }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ForwardLabels {
    /// "direct" or "agent".
    pub mode: &'static str,
    /// A status class ("2xx") or a failure code ("connect-failed").
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DispatchLabels {
    /// "standby" (down a call the agent opened in advance) or "offer".
    pub way: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthFailureLabels {
    /// What was presented: "admin_token" (or a token that is no one's),
    /// "service_account_token" (expired or revoked), "client_secret",
    /// "callback_token", "agent_token".
    pub credential: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// "sent" (to the replica holding the agent) or "received" (from a peer).
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerRefusalLabels {
    /// "missing", "malformed", "bad-signature", "expired", "replayed" or
    /// "body" (a body's tag failed or was missing).
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Both listeners' connections and requests by client (`borealis_serve`).
    pub connections: ConnectionMetrics,
    /// Request bodies that did not arrive within `body_timeout`.
    pub request_body_timeouts: Counter,
    pub auth_failures: Family<AuthFailureLabels, Counter>,
    pub rate_limited: Counter,
    pub agent_sessions: Family<AgentLabels, Gauge>,
    pub agent_dispatches: Family<DispatchLabels, Counter>,
    pub forwarded: Family<ForwardLabels, Counter>,
    pub forward_latency: Family<ModeLabels, Histogram>,
    /// Claims and lease losses of webhook runs and deployments.
    pub engine: EngineMetrics,
    /// Requests for agents held by another replica.
    pub peer_forwarded: Family<PeerLabels, Counter>,
    /// Peer tags this replica refused, by reason.
    pub peer_tags_refused: Family<PeerRefusalLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("borealis");
        let agent_sessions = Family::<AgentLabels, Gauge>::default();
        registry.register("agent_sessions", "Connected agent instances per identifier", agent_sessions.clone());
        let agent_dispatches = Family::<DispatchLabels, Counter>::default();
        registry.register(
            "agent_dispatches",
            "Requests handed to agents, by way: a standby call or an offer",
            agent_dispatches.clone(),
        );
        let forwarded = Family::<ForwardLabels, Counter>::default();
        registry.register("forwarded_requests", "Forwarded requests by mode and outcome", forwarded.clone());
        let forward_latency = Family::<ModeLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        registry.register(
            "forward_latency_seconds",
            "Time from a forwarded request's arrival to its response head",
            forward_latency.clone(),
        );
        let connections = ConnectionMetrics::register(&mut registry);
        let request_body_timeouts = Counter::default();
        registry.register(
            "request_body_timeouts",
            "Request bodies that did not arrive within the body timeout (their HTTP/1.1 connection is closed)",
            request_body_timeouts.clone(),
        );
        let auth_failures = Family::<AuthFailureLabels, Counter>::default();
        registry.register("auth_failures", "Failed authentications by the credential presented", auth_failures.clone());
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_requests",
            "Failed authentications answered 429 because their client address or credential id failed too often",
            rate_limited.clone(),
        );
        let engine = EngineMetrics::register(&mut registry);
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The relay's version, as a label; always 1", build_info);
        let peer_forwarded = Family::<PeerLabels, Counter>::default();
        registry.register(
            "peer_forwarded_requests",
            "Requests for agents held by another replica, sent there or received from there",
            peer_forwarded.clone(),
        );
        let peer_tags_refused = Family::<PeerRefusalLabels, Counter>::default();
        registry.register(
            "peer_tags_refused",
            "Requests on the peer route refused for their peer tag or their body's tag, by reason",
            peer_tags_refused.clone(),
        );
        Self {
            registry,
            peer_tags_refused,
            engine,
            peer_forwarded,
            connections,
            request_body_timeouts,
            auth_failures,
            rate_limited,
            agent_sessions,
            agent_dispatches,
            forwarded,
            forward_latency,
        }
    }
}

impl Metrics {
    pub fn record(&self, mode: &'static str, outcome: String, seconds: f64) {
        self.forwarded.get_or_create(&ForwardLabels { mode, outcome }).inc();
        self.forward_latency.get_or_create(&ModeLabels { mode }).observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// "2xx" for 204 and so on.
pub use borealis_engine::metrics::status_class;
