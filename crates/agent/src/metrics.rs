//! The agent's Prometheus metrics, served on `--health-listen` at `/metrics`.

use borealis_serve::ConnectionMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// A status class ("2xx") or a failure code ("destination-not-allowed").
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    pub connected: Gauge,
    pub in_flight: Gauge,
    pub requests: Family<OutcomeLabels, Counter>,
    pub latency: Histogram,
    pub sessions: Counter,
    pub drains: Counter,
    /// The health listener's connections (`--health-listen`).
    pub connections: ConnectionMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("borealis_agent");
        let connected = Gauge::default();
        registry.register("connected", "1 while the agent holds a session with the relay", connected.clone());
        let in_flight = Gauge::default();
        registry.register("in_flight", "Requests being forwarded now", in_flight.clone());
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register("requests", "Forwarded requests by outcome", requests.clone());
        let latency = Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register("request_latency_seconds", "Time to the destination's response head", latency.clone());
        let sessions = Counter::default();
        registry.register("sessions", "Sessions established with the relay", sessions.clone());
        let drains = Counter::default();
        registry.register("drains", "Drain notices received from the relay", drains.clone());
        let connections = ConnectionMetrics::register(&mut registry);
        Self { registry, connected, in_flight, requests, latency, sessions, drains, connections }
    }
}

impl Metrics {
    pub fn count(&self, outcome: impl Into<String>) {
        self.requests.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}
