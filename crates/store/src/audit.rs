//! The audit trail: every state-changing request and every refused
//! authorization, appended and never changed.

use std::time::SystemTime;

use crate::error::StoreError;

/// One entry, as appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its place in the trail, given by the store (0 before it is appended).
    pub seq: i64,
    pub time: SystemTime,
    /// `admin`, `service_account`, `user`, or `anonymous`.
    pub actor_kind: String,
    pub actor_id: String,
    pub actor_name: String,
    pub team: Option<String>,
    /// What was asked: `deployment.create`, `secret.put`, ...
    pub action: String,
    /// What it was asked of: the request's path.
    pub object: String,
    /// `allowed` (and what came of it), `refused`, `unauthenticated`.
    pub outcome: String,
    /// The HTTP status answered.
    pub status: u16,
    pub source_address: Option<String>,
    pub request_id: String,
}

/// Most entries appended in one statement: well within SQLite's limit of
/// bound values (11 a row).
pub const MAX_AUDIT_BATCH: usize = 512;

/// Which entries, and how many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub team: Option<String>,
    /// An actor's id.
    pub actor: Option<String>,
    pub action: Option<String>,
    pub since: Option<SystemTime>,
    pub until: Option<SystemTime>,
    /// Only entries before this one (older): a page's cursor.
    pub before: Option<i64>,
    pub limit: u32,
}

#[async_trait::async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `entries` in order (their `seq` is ignored), in one
    /// statement per [`MAX_AUDIT_BATCH`].
    async fn append_audit(&self, entries: &[AuditEntry]) -> Result<(), StoreError>;
    /// Newest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError>;
    /// Removes entries older than `before` (the retention setting); returns how many.
    async fn forget_audit_before(&self, before: SystemTime) -> Result<u64, StoreError>;
}
