//! Console sessions: an operator signed in to the web console, with the
//! admin token or as a person through the identity provider. Only a hash of
//! each session's id is kept, so the table alone signs no one in, and a seal
//! that ties the session to the credential it was signed in with.

use std::time::SystemTime;

use crate::error::StoreError;

/// A signed-in console session, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// The SHA-256 of the session id the cookie carries.
    pub id_hash: Vec<u8>,
    /// An HMAC of the session id keyed by the SHA-256 of the admin token it
    /// was signed in with (the relay checks it; the store only keeps it).
    pub admin_seal: Vec<u8>,
    pub expires_at: SystemTime,
    /// A person signed in through the identity provider; `None`: the admin token.
    pub person: Option<Person>,
}

/// A person as the identity provider vouched for them at sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The provider's `sub`.
    pub subject: String,
    /// How they are shown: their name, else their email, else the subject.
    pub name: String,
    /// The groups the provider's groups claim named.
    pub groups: Vec<String>,
}

#[async_trait::async_trait]
pub trait ConsoleSessionStore: Send + Sync + 'static {
    /// Records a session that ends at `expires_at`, and forgets every
    /// session already expired at `now` (sign-ins are rare: the table stays small).
    async fn create_console_session(&self, session: &ConsoleSession, now: SystemTime) -> Result<(), StoreError>;
    /// The session, if it exists and has not expired at `now`.
    async fn console_session(&self, id_hash: &[u8], now: SystemTime) -> Result<Option<ConsoleSession>, StoreError>;
    /// Ends a session (sign-out); false if there was none.
    async fn end_console_session(&self, id_hash: &[u8]) -> Result<bool, StoreError>;
}
