//! Agents and callback clients: their credentials and connected instances.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /api/v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateAgent {
    /// The agent identifier webhooks name in `agentIdentifier`.
    pub id: String,
}

/// A new agent's credentials; the secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentCredentials {
    pub agent_id: String,
    /// The team it belongs to.
    #[serde(default)]
    pub team: String,
    pub client_id: String,
    pub client_secret: String,
}

/// `POST /api/v1/clients`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateClient {
    /// The external system's name.
    pub name: String,
}

/// A callback client's credentials; the secret is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCredentials {
    pub name: String,
    /// The team it belongs to.
    #[serde(default)]
    pub team: String,
    pub client_id: String,
    pub client_secret: String,
}

/// `GET /api/v1/agents`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<Agent>,
}

/// A registered agent identifier and its connected instances.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub agent_id: String,
    /// The team it belongs to.
    #[serde(default)]
    pub team: String,
    pub client_id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Whether any instance is connected.
    pub connected: bool,
    pub instances: Vec<AgentInstance>,
}

/// One connected agent process (one tunnel session).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentInstance {
    pub session_id: String,
    /// The instance name the agent sent (its host name, by default).
    pub instance: String,
    pub version: String,
    /// The agent's address as the relay sees it.
    pub remote_addr: Option<String>,
    #[schema(format = DateTime)]
    pub connected_since: String,
    #[schema(format = DateTime)]
    pub last_heartbeat: String,
    /// Requests under way on this instance.
    pub in_flight: u64,
    /// Requests it takes at once.
    pub capacity: u32,
    /// Standby calls it may keep open.
    pub standby_calls: u32,
    /// Standby calls open and idle now.
    pub standby_idle: u64,
    /// Lanes it may open: long-lived calls carrying small requests,
    /// batched. 0: every request takes a call of its own.
    #[serde(default)]
    pub lanes: u32,
    /// Lanes open now.
    #[serde(default)]
    pub lanes_open: u64,
    /// The destinations the instance forwards to, as it reported them;
    /// absent when it did not say (an older agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_list: Option<AllowListReport>,
    pub draining: bool,
    /// The name of the relay replica that holds this session.
    pub replica: String,
    /// Whether the replica that answered holds it. Only the holder knows
    /// the live counters (`inFlight`, `standbyIdle`, `lanesOpen`, `draining`); for a
    /// session another replica holds they are 0 and `lastHeartbeat` is when
    /// that replica last vouched for it.
    pub held_here: bool,
}

/// `DELETE /api/v1/agents/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRevoked {
    pub agent_id: String,
    pub revoked: bool,
    /// Live sessions closed by the revocation.
    pub sessions_closed: u64,
}

/// `DELETE /api/v1/clients/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientRevoked {
    pub name: String,
    pub revoked: bool,
}

/// An agent instance's allow-list, as it reported it when it connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AllowListReport {
    /// Each rule as the agent's operator wrote it: `host`, `host:port`,
    /// `*.domain`, an address or a CIDR block.
    pub rules: Vec<String>,
    /// Every destination passes (`--allow-any`).
    pub any: bool,
}
