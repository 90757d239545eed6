//! What every handler shares.

use std::sync::Arc;

use borealis_egress::Egress;
use borealis_store::Store;

use crate::auth::Authority;
use crate::config::RelayConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::runs::engine::Engine;
use crate::throttle::AuthGuard;
use crate::vault::Vault;

pub struct AppState {
    pub config: RelayConfig,
    pub store: Arc<dyn Store>,
    pub auth: Authority,
    pub hub: Arc<Hub>,
    /// Direct mode: public destinations plus `direct_allow`.
    pub egress: Egress,
    pub metrics: Arc<Metrics>,
    pub vault: Vault,
    pub engine: Engine,
    /// Base of callback URIs: `public_url`, else this relay's HTTP address.
    pub public_base: String,
    /// Ids of deployments that changed (approvals, steps), for waiters.
    pub deployment_events: tokio::sync::broadcast::Sender<String>,
    /// Failed authentication: logged, counted, limited per peer.
    pub auth_guard: AuthGuard,
}

impl AppState {
    pub fn deployment_changed(&self, id: &str) {
        let _ = self.deployment_events.send(id.to_owned());
    }
}
