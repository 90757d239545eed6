//! Console sessions: an operator signed in to the web console. Only a hash
//! of each session's id is kept, so the table alone signs no one in, and a
//! seal that ties the session to the admin token it was signed in with.

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
