//! The traits of the whole store: what every backend does besides holding
//! data, and [`Store`], every aggregate at once.

use crate::audit::AuditStore;
use crate::cluster::ClusterStore;
use crate::console::ConsoleSessionStore;
use crate::credentials::CredentialStore;
use crate::deployments::DeploymentStore;
use crate::error::StoreError;
use crate::identities::IdentityStore;
use crate::providers::MetricProviderStore;
use crate::runs::RunStore;
use crate::secrets::SecretStore;
use crate::settings::SettingStore;

/// What every backend does besides holding data.
#[async_trait::async_trait]
pub trait Lifecycle: Send + Sync + 'static {
    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Closes the connections; acknowledged writes are durable already.
    async fn close(&self);
    /// Whether other relay processes may use this store at the same time
    /// (PostgreSQL). Where not, whatever the store says is leased belongs to
    /// a previous life of this relay, and is taken over at start at once.
    fn shared(&self) -> bool;
}

/// Every aggregate's trait, for the one handle that needs them all. Prefer
/// the narrowest trait in signatures; this one exists for `Arc<dyn Store>`.
pub trait Store:
    CredentialStore
    + SecretStore
    + MetricProviderStore
    + RunStore
    + DeploymentStore
    + SettingStore
    + ClusterStore
    + ConsoleSessionStore
    + IdentityStore
    + AuditStore
    + Lifecycle
{
}

impl<T> Store for T where
    T: CredentialStore
        + SecretStore
        + MetricProviderStore
        + RunStore
        + DeploymentStore
        + SettingStore
        + ClusterStore
        + ConsoleSessionStore
        + IdentityStore
        + AuditStore
        + Lifecycle
{
}
