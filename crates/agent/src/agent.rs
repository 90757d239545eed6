//! What every part of a running agent shares.

use std::sync::Arc;
use std::time::Duration;

use borealis_egress::Egress;
use tokio::sync::{Notify, Semaphore};

use crate::config::AgentConfig;
use crate::metrics::Metrics;

/// What every part of a running agent shares.
pub struct Agent {
    pub config: AgentConfig,
    pub egress: Egress,
    pub metrics: Metrics,
    pub limiter: Arc<Semaphore>,
    pub(crate) idle: Notify,
}

impl Agent {
    /// Waits until no request is in flight, or `grace` passes.
    pub async fn wait_idle(&self, grace: Duration) {
        let idle = async {
            loop {
                let notified = self.idle.notified();
                if self.metrics.in_flight.get() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(grace, idle).await;
    }

    pub fn is_connected(&self) -> bool {
        self.metrics.connected.get() == 1
    }
}
