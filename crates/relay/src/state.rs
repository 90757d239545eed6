//! What every handler shares.

use std::sync::Arc;

use borealis_egress::Egress;
use borealis_store::Store;

use crate::auth::Authority;
use crate::config::RelayConfig;
use crate::hub::Hub;
use crate::metrics::Metrics;

pub struct AppState {
    pub config: RelayConfig,
    pub store: Store,
    pub auth: Authority,
    pub hub: Arc<Hub>,
    /// Direct mode: public destinations plus `direct_allow`.
    pub egress: Egress,
    pub metrics: Arc<Metrics>,
}
