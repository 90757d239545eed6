//! Metric providers that analysis steps query.

use std::time::SystemTime;

use crate::error::StoreError;

/// A metric provider analysis steps query: `kind` is `prometheus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricProvider {
    /// The team it belongs to; names are unique within a team.
    pub team: String,
    pub name: String,
    pub kind: String,
    pub url: String,
    /// Queries go through this agent's tunnel; without, direct.
    pub agent: Option<String>,
    /// `(key, value template)`, in order.
    pub headers: Vec<(String, String)>,
    pub created_at: SystemTime,
}

#[async_trait::async_trait]
pub trait MetricProviderStore: Send + Sync + 'static {
    /// Adds a provider; [`Conflict::ProviderExists`] when its team has the name.
    ///
    /// [`Conflict::ProviderExists`]: crate::Conflict::ProviderExists
    async fn insert_provider(&self, provider: &MetricProvider) -> Result<(), StoreError>;
    /// Of `team`, or of every team; ordered by team, then name.
    async fn providers(&self, team: Option<&str>) -> Result<Vec<MetricProvider>, StoreError>;
    async fn provider(&self, team: &str, name: &str) -> Result<Option<MetricProvider>, StoreError>;
    async fn delete_provider(&self, team: &str, name: &str) -> Result<bool, StoreError>;
}
