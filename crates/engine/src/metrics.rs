//! What the engine counts, registered into the relay's registry. Counters
//! count what this replica did; the gauges what this replica holds, so the
//! sum over replicas is the whole.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// "attempt" (a due webhook attempt), "takeover" (an attempt whose
    /// lease lapsed) or "deployment".
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// How it ended: the API's state.
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `direct` or `remoteNetworkAgent`.
    pub network_mode: &'static str,
    /// The reply's status class (`2xx` ... `5xx`), or `no_reply`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    pub network_mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

/// The engine's metrics. Clones count into the same series.
#[derive(Clone, Debug)]
pub struct EngineMetrics {
    /// Work this replica claimed in the shared store.
    pub claims: Family<ClaimLabels, Counter>,
    /// Leases this replica found taken over when it wrote.
    pub lease_losses: Family<ClaimLabels, Counter>,
    pub runs_started: Counter,
    pub runs_finished: Family<StateLabels, Counter>,
    pub attempts: Family<AttemptLabels, Counter>,
    /// From sending a webhook's call to its reply's end, or its failure.
    pub call_seconds: Family<ModeLabels, Histogram>,
    /// Callbacks by what became of them: `accepted`, `repeat`, `conflict`,
    /// `too_late`, `unknown` (and `refused` for a bad token, counted at the edge).
    pub callbacks: Family<ResultLabels, Counter>,
    /// Runs that waited for their callback until the deadline.
    pub deadlines: Counter,
    pub deployments_started: Counter,
    pub deployments_finished: Family<StateLabels, Counter>,
    /// Deployments running on this replica.
    pub deployments_running: Gauge,
    /// Manual approvals this replica's deployments wait for.
    pub approvals_pending: Gauge,
    /// Analysis judgment runs, by `passed` or `failed`.
    pub judgments: Family<ResultLabels, Counter>,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            claims: Family::default(),
            lease_losses: Family::default(),
            runs_started: Counter::default(),
            runs_finished: Family::default(),
            attempts: Family::default(),
            call_seconds: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0])
            }),
            callbacks: Family::default(),
            deadlines: Counter::default(),
            deployments_started: Counter::default(),
            deployments_finished: Family::default(),
            deployments_running: Gauge::default(),
            approvals_pending: Gauge::default(),
            judgments: Family::default(),
        }
    }
}

impl EngineMetrics {
    /// The engine's series, registered into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register("claims", "Work this replica claimed: attempts, takeovers, deployments", m.claims.clone());
        registry.register(
            "lease_losses",
            "Leases this replica lost to another before it could write its result",
            m.lease_losses.clone(),
        );
        registry.register("webhook_runs_started", "Webhook runs created here", m.runs_started.clone());
        registry.register(
            "webhook_runs_finished",
            "Webhook runs this replica ended, by state",
            m.runs_finished.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook calls made, by network mode and reply status class (no_reply: none came)",
            m.attempts.clone(),
        );
        registry.register(
            "webhook_call_seconds",
            "Time of a webhook's call, from sending to its reply's end or its failure",
            m.call_seconds.clone(),
        );
        registry.register("webhook_callbacks", "Callbacks by what became of them", m.callbacks.clone());
        registry.register(
            "webhook_callback_deadlines",
            "Webhook runs that waited for their callback until the deadline",
            m.deadlines.clone(),
        );
        registry.register("deployments_started", "Deployments created here", m.deployments_started.clone());
        registry.register(
            "deployments_finished",
            "Deployments this replica ended, by state",
            m.deployments_finished.clone(),
        );
        registry.register("deployments_running", "Deployments running on this replica", m.deployments_running.clone());
        registry.register(
            "approvals_pending",
            "Manual approvals the deployments running on this replica wait for",
            m.approvals_pending.clone(),
        );
        registry.register("analysis_judgments", "Analysis judgment runs, by result", m.judgments.clone());
        m
    }

    pub(crate) fn claimed(&self, kind: &'static str) {
        self.claims.get_or_create(&ClaimLabels { kind }).inc();
    }

    pub(crate) fn lease_lost(&self, kind: &'static str) {
        self.lease_losses.get_or_create(&ClaimLabels { kind }).inc();
    }

    pub(crate) fn run_finished(&self, state: borealis_api::RunState) {
        self.runs_finished.get_or_create(&StateLabels { state: state.as_str() }).inc();
    }

    pub(crate) fn callback(&self, result: &'static str) {
        self.callbacks.get_or_create(&ResultLabels { result }).inc();
    }

    /// Counts a callback the edge refused before the engine saw it.
    pub fn callback_refused(&self) {
        self.callback("refused");
    }
}

/// A reply's status class, as every metric labels it: `1xx` ... `5xx`, or
/// `other` for a status outside them.
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "other",
    }
}

/// Holds a gauge one higher for as long as it lives.
pub(crate) struct Held(Gauge);

impl Held {
    pub(crate) fn on(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}
