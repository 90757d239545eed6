//! Where the changes other replicas announce go: to this replica's runs
//! and deployments (waking long polls and deployment steps), to the
//! revocation sweep and the credentials found live, and to the vault's copy
//! of the secrets.

use std::sync::Arc;

use crate::state::AppState;
use borealis_engine::cluster::ChangeSink;

pub struct LocalWaiters(pub Arc<AppState>);

impl ChangeSink for LocalWaiters {
    fn run_changed(&self, id: &str) {
        self.0.runs.changed(id);
    }

    fn deployment_changed(&self, id: &str) {
        self.0.deployments.changed(id);
    }

    fn credential_changed(&self, _client_id: &str) {
        self.0.auth.forget_live();
        self.0.revocations.notify_one();
    }

    fn secret_changed(&self, _name: &str) {
        self.0.vault.forget();
    }
}
