//! Metric providers that analysis steps query.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A header sent with every query; the value may hold `{{secrets.NAME}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeaderPair {
    pub key: String,
    pub value: String,
}

/// `POST /api/v1/metric-providers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateMetricProvider {
    pub name: String,
    /// `prometheus`, the one type supported. A string, not an enum, so that
    /// another type gets a reply that lists the supported ones.
    #[serde(rename = "type")]
    pub kind: String,
    /// The base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    /// Query through this agent's tunnel; without it, direct.
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderPair>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricProvider {
    pub name: String,
    /// The team it belongs to.
    #[serde(default)]
    pub team: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub agent: Option<String>,
    pub headers: Vec<HeaderPair>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/v1/metric-providers`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricProviderList {
    pub providers: Vec<MetricProvider>,
}

/// `DELETE /api/v1/metric-providers/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MetricProviderDeleted {
    pub name: String,
    pub deleted: bool,
}
