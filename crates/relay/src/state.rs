//! What the HTTP and gRPC edges share: the domain handles, and what only
//! the edges use (authentication, sessions, metrics).

use std::sync::Arc;

use borealis_store::Store;

use crate::auth::Authority;
use crate::config::RelayConfig;
use crate::forward::Forwarder;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::throttle::AuthGuard;
use borealis_engine::cluster::Replica;
use borealis_engine::deployments::Deployments;
use borealis_engine::runs::Runs;
use borealis_engine::vault::Vault;

pub struct AppState {
    pub config: RelayConfig,
    /// Credentials and metric providers, which the edges manage directly.
    pub store: Arc<dyn Store>,
    pub auth: Authority,
    pub hub: Arc<Hub>,
    pub forwarder: Arc<Forwarder>,
    pub metrics: Arc<Metrics>,
    pub vault: Arc<Vault>,
    pub runs: Arc<Runs>,
    pub deployments: Arc<Deployments>,
    /// Failed authentication: logged, counted, limited per peer.
    pub auth_guard: AuthGuard,
    /// This replica, as the cluster knows it.
    pub replica: Arc<Replica>,
    /// Wakes the revocation sweep when another replica revoked a credential.
    pub revocations: Arc<tokio::sync::Notify>,
    /// The peer tags used lately, each accepted once.
    pub peer_nonces: crate::auth::PeerNonces,
    /// The agents' listener, for the command line the console shows.
    pub agents_addr: Option<std::net::SocketAddr>,
    /// Proxied requests' audit entries, appended in batches.
    pub proxy_trail: crate::access::trail::ProxyTrail,
    /// People's sign-in through the identity provider, when one is set.
    pub sign_in: Option<Arc<crate::access::oidc::SignIn>>,
}

impl AppState {
    /// The provider groups whose people are organization admins (none
    /// without sign-in).
    pub fn admin_groups(&self) -> &[String] {
        self.sign_in.as_deref().map_or(&[], |sign_in| sign_in.admin_groups())
    }
}
