//! What the engine counts, registered into the relay's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClaimLabels {
    /// "attempt" (a due webhook attempt), "takeover" (an attempt whose
    /// lease lapsed) or "deployment".
    pub kind: &'static str,
}

/// The engine's metrics. Clones count into the same series.
#[derive(Clone, Debug, Default)]
pub struct EngineMetrics {
    /// Work this replica claimed in the shared store.
    pub claims: Family<ClaimLabels, Counter>,
    /// Leases this replica found taken over when it wrote.
    pub lease_losses: Family<ClaimLabels, Counter>,
}

impl EngineMetrics {
    /// The engine's series, registered into `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "claims",
            "Work this replica claimed: attempts, takeovers, deployments",
            metrics.claims.clone(),
        );
        registry.register(
            "lease_losses",
            "Leases this replica lost to another before it could write its result",
            metrics.lease_losses.clone(),
        );
        metrics
    }

    pub(crate) fn claimed(&self, kind: &'static str) {
        self.claims.get_or_create(&ClaimLabels { kind }).inc();
    }

    pub(crate) fn lease_lost(&self, kind: &'static str) {
        self.lease_losses.get_or_create(&ClaimLabels { kind }).inc();
    }
}
