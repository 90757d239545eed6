//! Where the changes other replicas announce go: to this replica's runs
//! and deployments (waking long polls and deployment steps) and to the
//! revocation sweep.

use std::sync::Arc;

use tokio::sync::Notify;

use crate::cluster::ChangeSink;
use crate::deployments::Deployments;
use crate::runs::Runs;

pub struct LocalWaiters {
    pub runs: Arc<Runs>,
    pub deployments: Arc<Deployments>,
    /// Wakes the revocation sweep.
    pub revocations: Arc<Notify>,
}

impl ChangeSink for LocalWaiters {
    fn run_changed(&self, id: &str) {
        self.runs.changed(id);
    }

    fn deployment_changed(&self, id: &str) {
        self.deployments.changed(id);
    }

    fn credential_changed(&self, _client_id: &str) {
        self.revocations.notify_one();
    }
}
