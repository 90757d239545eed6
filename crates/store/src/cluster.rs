//! The replicas sharing one store: which relay processes are alive, which
//! agent sessions each holds, and the feed of changes other replicas made.
//! On a store only one relay uses (SQLite) the records still work, so
//! `agents list` and forwarding read them the same way, and the feed is
//! empty.

use std::time::SystemTime;

use tokio::sync::mpsc;

use crate::error::StoreError;

/// One relay process. `id` is new with every start, so a restarted
/// replica never inherits the leases of its previous life; `name` is what
/// operators see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaRecord {
    pub id: String,
    pub name: String,
    /// Where other replicas reach its internal routes, when it has peers.
    pub peer_url: Option<String>,
    pub started_at: SystemTime,
    pub seen_at: SystemTime,
}

/// A live agent session, as the replica holding it recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub session_id: String,
    pub replica_id: String,
    /// The team of the agent's credential.
    pub team: String,
    pub agent_id: String,
    pub instance: String,
    pub version: String,
    pub remote_addr: Option<String>,
    pub connected_at: SystemTime,
    /// The allow-list the instance reported; `None`: it did not say.
    pub allow_list: Option<ReportedAllowList>,
}

/// An agent instance's allow-list as it reported it: its rules' text, or
/// every destination.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ReportedAllowList {
    pub rules: Vec<String>,
    pub any: bool,
}

/// Something another replica changed, to wake the waiters here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Run(String),
    Deployment(String),
    /// A credential was revoked (or created): sessions may need cutting.
    Credential(String),
    /// A secret was set or deleted: decrypted copies are stale.
    Secret(String),
}

impl Change {
    /// Reads the payload the database sends (`run:ID`, `deployment:ID`, `credential:ID`, `secret:NAME`).
    pub fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        let id = id.to_owned();
        Some(match kind {
            "run" => Change::Run(id),
            "deployment" => Change::Deployment(id),
            "credential" => Change::Credential(id),
            "secret" => Change::Secret(id),
            _ => return None,
        })
    }
}

#[async_trait::async_trait]
pub trait ClusterStore: Send + Sync + 'static {
    /// Records `replica` as alive now (insert or refresh its `seen_at`).
    /// A store with a clock of its own (PostgreSQL, which replicas share)
    /// records its own time instead of `seen_at`, and returns it: replicas
    /// read leases on that one clock.
    async fn replica_seen(&self, replica: &ReplicaRecord) -> Result<Option<SystemTime>, StoreError>;
    /// Removes a replica that stops in order, with its sessions.
    async fn replica_gone(&self, id: &str) -> Result<(), StoreError>;
    /// Replicas seen at or after `since`, by name then id.
    async fn replicas(&self, since: SystemTime) -> Result<Vec<ReplicaRecord>, StoreError>;
    /// Removes replicas not seen since `before`, and their sessions.
    /// Returns how many replicas went.
    async fn forget_replicas(&self, before: SystemTime) -> Result<u64, StoreError>;
    async fn put_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    async fn remove_session(&self, session_id: &str) -> Result<(), StoreError>;
    /// Sessions held by replicas seen at or after `since`: of `agent`
    /// (`(team, identifier)`), or all; by team, agent, then connection time.
    async fn sessions(&self, agent: Option<(&str, &str)>, since: SystemTime) -> Result<Vec<SessionRecord>, StoreError>;
    /// The ids of the sessions `replica_id` recorded, so it can set its
    /// records right against the sessions it holds.
    async fn replica_session_ids(&self, replica_id: &str) -> Result<Vec<String>, StoreError>;
    /// How many sessions each replica seen at or after `since` holds, by
    /// replica id (a replica holding none is listed with 0).
    async fn sessions_held(&self, since: SystemTime) -> Result<Vec<(String, u64)>, StoreError>;
    /// Changes other processes commit from now on, for as long as the
    /// receiver is kept. `None` where no other process writes (SQLite).
    /// Delivery is best effort (a lost connection loses what came
    /// meanwhile), so waiters also poll.
    async fn changes(&self) -> Result<Option<mpsc::Receiver<Change>>, StoreError>;
}
