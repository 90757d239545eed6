//! OAuth client credentials: agents' and callers', secrets only as hashes.

use std::time::SystemTime;

use crate::error::StoreError;

/// Who a credential belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// An agent; the subject is its identifier.
    Agent,
    /// An external system that calls back; the subject is its name.
    Callback,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Agent => "agent",
            CredentialKind::Callback => "callback",
        }
    }

    pub fn parse(text: &str) -> Self {
        if text == "agent" { CredentialKind::Agent } else { CredentialKind::Callback }
    }
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub client_id: String,
    pub kind: CredentialKind,
    /// The team it belongs to; its subject is unique among that team's.
    pub team: String,
    pub subject: String,
    pub secret_hash: Vec<u8>,
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
}

impl Credential {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

#[async_trait::async_trait]
pub trait CredentialStore: Send + Sync + 'static {
    /// Stores a new credential of `team`. Fails with [`Conflict::CredentialExists`]
    /// while `subject` has a live one in that team.
    ///
    /// [`Conflict::CredentialExists`]: crate::Conflict::CredentialExists
    async fn create_credential(
        &self,
        kind: CredentialKind,
        team: &str,
        subject: &str,
        client_id: &str,
        secret_hash: &[u8],
    ) -> Result<Credential, StoreError>;
    async fn credential(&self, client_id: &str) -> Result<Option<Credential>, StoreError>;
    async fn active_credential(
        &self,
        kind: CredentialKind,
        team: &str,
        subject: &str,
    ) -> Result<Option<Credential>, StoreError>;
    /// Of `team`, or of every team; ordered by team, then subject.
    async fn active_credentials(&self, kind: CredentialKind, team: Option<&str>)
    -> Result<Vec<Credential>, StoreError>;
    /// Revokes the live credential of `subject` in `team`. Returns whether there was one.
    async fn revoke(&self, kind: CredentialKind, team: &str, subject: &str) -> Result<bool, StoreError>;
}
